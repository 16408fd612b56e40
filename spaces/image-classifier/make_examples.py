"""Draw the example pictures of the image-classification demo (an ant and a bee, 256x256 PNG).

They are drawings, not photos from a data set: small, free to ship, and enough to try the page.
Run from the repository root: ``python spaces/image-classifier/make_examples.py``.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
HERE = Path(__file__).resolve().parent


def background(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(img)
    for y in range(SIZE):
        t = y / (SIZE - 1)
        draw.line([(0, y), (SIZE, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    return img


def ant() -> Image.Image:
    img = background((200, 225, 170), (120, 160, 80))
    draw = ImageDraw.Draw(img)
    body = (70, 30, 20)
    for knee, foot in ((70, 25), (110, 80), (150, 135)):  # three pairs of legs from the thorax
        draw.line([(125, 130), (knee, 95), (foot + 20, 70)], fill=body, width=5)
        draw.line([(125, 135), (knee, 170), (foot + 20, 195)], fill=body, width=5)
    draw.ellipse([30, 105, 105, 160], fill=body)  # abdomen
    draw.ellipse([100, 115, 150, 148], fill=body)  # thorax
    draw.ellipse([148, 108, 195, 152], fill=body)  # head
    draw.line([(185, 118), (215, 85), (235, 80)], fill=body, width=4)  # antennae
    draw.line([(188, 140), (220, 165), (238, 160)], fill=body, width=4)
    draw.ellipse([175, 118, 183, 126], fill=(20, 10, 5))
    return img.filter(ImageFilter.SMOOTH)


def bee() -> Image.Image:
    img = background((190, 215, 245), (250, 235, 200))
    draw = ImageDraw.Draw(img)
    draw.ellipse([70, 55, 150, 125], fill=(225, 240, 250), outline=(150, 170, 190), width=2)  # wings
    draw.ellipse([120, 50, 190, 115], fill=(225, 240, 250), outline=(150, 170, 190), width=2)
    draw.ellipse([50, 105, 200, 185], fill=(245, 190, 30))  # body
    for x in (85, 120, 155):  # stripes
        draw.chord([x - 12, 105, x + 12, 185], 0, 360, fill=(30, 25, 20))
    draw.ellipse([185, 120, 225, 165], fill=(30, 25, 20))  # head
    draw.polygon([(52, 140), (28, 146), (52, 152)], fill=(30, 25, 20))  # sting
    draw.line([(210, 125), (225, 95)], fill=(30, 25, 20), width=3)
    draw.line([(218, 130), (240, 105)], fill=(30, 25, 20), width=3)
    return img.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    folder = HERE / "examples"
    folder.mkdir(exist_ok=True)
    for name, draw in (("ant", ant), ("bee", bee)):
        draw().save(folder / f"{name}.png", optimize=True)
        print(folder / f"{name}.png")
