"""Pictures for the Spark image models: structured scenes and their re-uploaded near copies."""

from __future__ import annotations

import io


def png_bytes(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(im, quality: int) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def scene(kind: str):
    """Structured pictures (gradients and shapes) whose dHashes differ a lot between kinds."""
    from PIL import Image, ImageDraw

    w, h = 320, 240
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            if kind == "sunset":
                px[x, y] = (255 - y, 100 + x // 4, 80)
            elif kind == "sea":
                px[x, y] = (20, 60 + y // 2, 255 - x // 2)
            else:  # checker
                px[x, y] = (230, 230, 230) if (x // 40 + y // 40) % 2 else (25, 25, 25)
    d = ImageDraw.Draw(im)
    if kind == "sunset":
        d.ellipse((40, 60, 160, 180), fill=(255, 220, 0))
        d.rectangle((200, 150, 300, 230), fill=(10, 10, 10))
    elif kind == "sea":
        d.polygon([(160, 20), (300, 200), (20, 200)], fill=(250, 250, 250))
    return im


def near_copy(im) -> bytes:
    """What a re-upload looks like: a small watermark, downsized to half, recompressed as JPEG."""
    from PIL import ImageDraw

    im = im.copy()
    ImageDraw.Draw(im).rectangle((250, 10, 310, 40), fill=(255, 255, 255))
    return jpeg_bytes(im.resize((160, 120)), quality=55)
