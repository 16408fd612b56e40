"""In-memory image sets: decoding, device-side batch augmentation, and the cifar10/tiny-imagenet
recipes end to end on tiny generated data."""

from __future__ import annotations

import json

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from conftest import COLORS, write_cifar_like

from hfkit.data.tensor_images import TensorImages, decode_all
from hfkit.data.transforms import BatchAugment


def labelled_batch(n: int = 64, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Images filled with their label's colour: any pixel tells which label it belongs to."""
    labels = torch.arange(n) % 3
    images = torch.tensor(COLORS, dtype=torch.uint8)[labels][:, :, None, None].expand(n, 3, size, size)
    return images.contiguous(), labels


def identity_augment(**kwargs) -> BatchAugment:
    return BatchAugment(input_size=kwargs.pop("input_size", 8), mean=(0, 0, 0), std=(1, 1, 1), **kwargs)


def test_crops_and_flips_keep_each_label_with_its_own_image():
    images, labels = labelled_batch()
    out = identity_augment(pad=3, hflip=0.5)(images, seed=1, train=True)
    colors = torch.tensor(COLORS, dtype=torch.float32) / 255
    for x, y in zip(out, labels):
        assert torch.allclose(x.permute(1, 2, 0), colors[y].expand(8, 8, 3))


def test_crop_reflects_the_border_and_flip_mirrors():
    row = torch.arange(6, dtype=torch.uint8).expand(1, 3, 6, 6).contiguous()  # pixel value = column
    aug = identity_augment(input_size=6, pad=2, hflip=0.5)
    seen = set()
    for seed in range(40):
        cols = (aug(row, seed, train=True)[0, 0, 0] * 255).round().to(torch.long).tolist()
        seen.add(tuple(cols))
        # a shifted, reflected, maybe mirrored run of columns: neighbours differ by one
        assert all(abs(a - b) <= 1 for a, b in zip(cols, cols[1:]))
    assert (2, 1, 0, 1, 2, 3) in seen or (3, 2, 1, 0, 1, 2) in seen  # reflected at the left border
    assert (0, 1, 2, 3, 4, 5) in seen and (5, 4, 3, 2, 1, 0) in seen


def test_augmentation_moves_pixels_and_repeats_with_its_seed():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen)
    aug = identity_augment(pad=2, hflip=0.5)
    a, b, c = aug(images, 7, train=True), aug(images, 7, train=True), aug(images, 8, train=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, images.float() / 255)
    # evaluation is only the conversion: no randomness at all
    assert torch.equal(aug(images, train=False), aug(images, 9, train=False))
    assert torch.allclose(aug(images, train=False), images.float() / 255, atol=1e-6)


def test_flip_only_keeps_the_pixel_statistics_the_normalisation_expects():
    """Without padding, augmentation only rearranges pixels: per-channel mean and std are those
    of the data, so normalising with the data's mean/std gives mean 0, std 1."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (256, 3, 16, 16), dtype=torch.uint8, generator=gen)
    x = images.float() / 255
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    aug = BatchAugment(16, tuple(mean.tolist()), tuple(std.tolist()), pad=0, hflip=0.5)
    out = aug(images, 3, train=True)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    # reflect padding (4 px on 32 px) repeats real pixels: the mean stays the data's
    images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=gen)
    padded = identity_augment(input_size=32, pad=4)(images, 3, train=True).mean()
    assert abs(padded.item() - images.float().mean().item() / 255) < 0.005


def test_resize_to_the_model_input_and_channels_last():
    images, _ = labelled_batch(4, size=16)
    out = identity_augment(input_size=48, channels_last=True)(images, 0, train=True)
    assert out.shape == (4, 3, 48, 48)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_tensor_images_batches_by_one_index_with_a_seed():
    images, labels = labelled_batch(10)
    ds = TensorImages(images, labels, seed=5)
    x, y, seed = ds.__getitems__([(2, 3), (2, 7)])
    assert torch.equal(x, images[[3, 7]]) and y.tolist() == [0, 1]
    assert seed != ds.__getitems__([(3, 3), (3, 7)])[2]  # another epoch, other augmentation


def test_decode_all_reads_a_parquet_split_into_uint8(tmp_path):
    root = write_cifar_like(tmp_path / "c", per_class=2, test_per_class=1)
    ds = datasets.load_dataset(str(root))["train"]
    images = decode_all(ds, "img")
    assert images.dtype == torch.uint8 and images.shape == (6, 3, 32, 32)
    first = np.array(ds[0]["img"].convert("RGB"))
    assert torch.equal(images[0], torch.from_numpy(first).permute(2, 0, 1))


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    root = tmp_path_factory.mktemp("cifar")
    data = write_cifar_like(root / "data")
    recipe = load_recipe("cifar10", [f"data.path={data}", "train.epochs=3", "train.batch_size=16",
                                     "train.eval_batch_size=16", "train.lr=0.05", "train.mixed_precision=no",
                                     "train.warmup_ratio=0", "eval.num_preview_images=6"],
                         output_dir=str(root / "run"))
    return root, finetune(recipe)


def test_cifar10_recipe_trains_in_memory_and_saves_what_predict_needs(cifar_run):
    root, results = cifar_run
    run = root / "run"
    assert results["eval_accuracy"] >= 0.9, results
    assert results["train_samples"] == 72 and results["eval_samples"] == 24
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "resnet18_cifar"
    assert config["pretrained_cfg"]["crop_mode"] == "squash"
    for name in ("training_curves.png", "confusion_matrix.png", "predictions.png"):
        assert (run / name).is_file()


def test_predict_on_32px_files_agrees_with_evaluation(cifar_run, tmp_path):
    from hfkit.finetune import finetune  # noqa: F401  (registers resnet18_cifar via hfkit.models)
    from hfkit.inference import ImageClassifier

    root, _ = cifar_run
    ds = datasets.load_dataset(str(root / "data"))["test"]
    classifier = ImageClassifier(str(root / "run"), device="cpu")
    model = classifier.model
    images = decode_all(ds, "img")
    from hfkit.data.transforms import batch_augment

    with torch.inference_mode():
        evaluated = model(batch_augment(model)(images)).argmax(-1).tolist()
    paths = []
    for i, row in enumerate(ds):
        path = tmp_path / f"{i}.png"
        row["img"].save(path)
        paths.append(path)
    predicted = [classifier.labels.index(ranked[0][0]) for ranked in classifier.predict(paths, top_k=1)]
    assert predicted == evaluated


def test_tiny_imagenet_style_run_upscales_with_mixup_and_ema(tmp_path):
    """64 px images upscaled on the device, mixup/CutMix and EMA on, like the tiny-imagenet recipe."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_cifar_like(tmp_path / "data", per_class=8, test_per_class=4, size=24)
    recipe = load_recipe("tiny-imagenet", [
        f"data.path={data}", "model.name=resnet18", "model.pretrained=false", "data.image_size=40",
        "train.epochs=2", "train.batch_size=8", "train.mixed_precision=no", "train.ema_decay=0.5",
        "eval.num_preview_images=0"], output_dir=str(tmp_path / "run"))
    results = finetune(recipe)
    assert results["train_samples"] == 24 and 0.0 <= results["eval_accuracy"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [3, 40, 40]
    assert PIL.Image.open(tmp_path / "run" / "training_curves.png").size[0] > 0


def test_images_of_one_size_stay_small_in_memory_and_several_sizes_are_resized(tmp_path):
    # decoding Tiny ImageNet's 64 px images at the model's 224 px held 12x their pixels in memory
    # (15 GB for 100,000); the batch transform upscales each batch on the device instead
    data = write_cifar_like(tmp_path / "data", per_class=2, test_per_class=1, size=24)
    ds = datasets.load_dataset(str(data))["train"]
    assert decode_all(ds, "img", size=40).shape[1:] == (3, 24, 24)
    images = [PIL.Image.new("RGB", (24, 24)), PIL.Image.new("RGB", (30, 20))]
    mixed = datasets.Dataset.from_dict({"img": images}, features=datasets.Features(img=datasets.Image()))
    assert decode_all(mixed, "img", size=40).shape == (2, 3, 40, 40)
    with pytest.raises(ValueError, match="images of different sizes"):
        decode_all(mixed, "img")


def test_serving_an_upscaled_model_feeds_it_exactly_what_evaluation_did(tmp_path):
    """24 px images, a 40 px model: predict resizes with the evaluation's own batch transform."""
    from hfkit.data.transforms import batch_augment
    from hfkit.finetune import finetune
    from hfkit.inference import ImageClassifier
    from hfkit.recipes import load_recipe

    data = write_cifar_like(tmp_path / "data", per_class=4, test_per_class=2, size=24)
    finetune(load_recipe("cifar10", [f"data.path={data}", "model.name=resnet18", "data.image_size=40",
                                     "train.epochs=1", "train.batch_size=4", "train.mixed_precision=no",
                                     "eval.num_preview_images=0"], output_dir=str(tmp_path / "run")))
    classifier = ImageClassifier(str(tmp_path / "run"), device="cpu")
    ds = datasets.load_dataset(str(data))["test"]
    evaluated = batch_augment(classifier.model)(decode_all(ds, "img"))
    path = tmp_path / "x.png"
    ds[0]["img"].save(path)
    assert torch.equal(classifier.transform(classifier.load(path)), evaluated[0])


def test_ema_weights_are_saved_and_resume_with_the_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_cifar_like(tmp_path / "data", per_class=4, test_per_class=2, size=16)
    sets = [f"data.path={data}", "train.batch_size=4", "train.mixed_precision=no",
            "eval.num_preview_images=0", "train.ema_decay=0.5"]
    # one epoch, one evaluation: the saved model is the average at the end of training
    one = tmp_path / "one"
    finetune(load_recipe("cifar10", [*sets, "train.epochs=1"], output_dir=str(one)))
    checkpoint = next((one / "checkpoints").glob("step-*"))
    ema = torch.load(next(checkpoint.glob("custom_checkpoint_*")), weights_only=True)
    raw, saved = load_file(checkpoint / "model.safetensors"), load_file(one / "model.safetensors")
    assert all(torch.equal(saved[k], ema[f"module.{k}"].float()) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)
    # interrupted and resumed, the average comes back with the checkpoint
    two = tmp_path / "two"
    recipe = load_recipe("cifar10", [*sets, "train.epochs=2"], output_dir=str(two))
    finetune(recipe, max_steps=4)
    results = finetune(recipe, resume="latest")
    assert results["global_step"] == 6 and not results["interrupted"]


@pytest.mark.parametrize("size", [3, 4])
def test_cutout_erases_a_square_of_erase_size_pixels(size):
    """Squares centred far enough inside to be whole: exactly size x size zeros per image."""
    images = torch.full((64, 3, 16, 16), 200, dtype=torch.uint8)
    aug = identity_augment(input_size=16, pad=0, hflip=0, erase=1.0, erase_size=size)
    erased = (aug(images, 5, train=True)[:, 0] == 0)
    rows, cols = erased.any(2), erased.any(1)
    whole = (rows.sum(1) == size) & (cols.sum(1) == size)
    assert whole.sum() > 32  # most centres are not at the border
    assert (erased[whole].flatten(1).sum(1) == size * size).all()
    assert erased.flatten(1).sum(1).max() == size * size  # never more


def test_flip_test_time_augmentation_averages_the_logits_of_both_views():
    from hfkit.objectives import Classification

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))  # not flip-invariant
    images, labels = labelled_batch(6)
    images = torch.randint(0, 256, images.shape, dtype=torch.uint8)
    batch = (images, labels, 0)
    fixed = identity_augment(pad=0, hflip=0)  # training views equal the evaluation view
    plain = Classification(batch_transform=fixed)
    tta = Classification(batch_transform=fixed, tta_hflip=True)
    x = fixed(images)
    expected = (model(x) + model(x.flip(-1))) / 2
    logits, _, _ = tta.logits_and_labels(model, batch)
    assert torch.allclose(logits, expected) and not torch.allclose(logits, model(x))
    assert torch.allclose(plain.logits_and_labels(model, batch)[0], model(x))
    # training never averages: the loss sees the augmented batch once
    assert torch.allclose(tta.logits_and_labels(model, batch, train=True)[0], model(x))


def test_the_cifar10_recipe_fields_reach_augmentation_evaluation_and_the_optimizer(tmp_path, monkeypatch):
    """Cutout size, flip TTA and weight decay on every parameter, as the recipe sets them, are
    what the run uses."""
    import hfkit.finetune
    import hfkit.training
    from hfkit.finetune import finetune
    from hfkit.objectives import Classification
    from hfkit.recipes import load_recipe

    objectives, optimizers = [], []

    class Recording(Classification):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            objectives.append(self)

    make_optimizer = hfkit.training.make_optimizer
    monkeypatch.setattr(hfkit.finetune, "Classification", Recording)
    monkeypatch.setattr(hfkit.training, "make_optimizer",
                        lambda model, t, *device: optimizers.append(make_optimizer(model, t, *device))
                        or optimizers[-1])
    data = write_cifar_like(tmp_path / "data", per_class=2, test_per_class=1, size=16)
    recipe = load_recipe("cifar10", [f"data.path={data}", "model.name=test_resnet", "data.image_size=16",
                                     "train.epochs=1", "train.batch_size=4", "train.mixed_precision=no",
                                     "eval.num_preview_images=0"], output_dir=str(tmp_path / "run"))
    finetune(recipe)
    (objective,), (optimizer,) = objectives, optimizers
    assert objective.tta_hflip and objective.label_smoothing == 0.2
    augment = objective.batch_transform
    assert (augment.erase, augment.erase_size, augment.pad) == (1.0, 8, 4)
    assert all(g["weight_decay"] == 5e-4 for g in optimizer.param_groups)
