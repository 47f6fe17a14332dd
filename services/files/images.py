"""Uploaded images made safe to store and serve: bytes in, bytes out, CPU-bound, run in a worker pool.

`process(data, max_side=, max_pixels=)` does, in order:

1. Opens the header only (Pillow is lazy) and refuses more than `max_pixels` pixels, counting every frame
   of an animation (width * height * frames), before one pixel is decoded. Pillow's own decompression-bomb
   guard is set to the same limit and its warning turned into an error, so a GIF frame that grows the
   canvas while decoding is refused too.
2. Decodes (`ImageFile.LOAD_TRUNCATED_IMAGES` stays False: a truncated or corrupt file is refused).
3. Resizes so the longest side is at most `max_side` (Lanczos; a JPEG is decoded at a reduced scale first
   when it is at least twice too big, which saves most of the memory and time).
4. Applies the EXIF orientation (`ImageOps.exif_transpose`).
5. Converts an embedded ICC profile to sRGB (`ImageCms`); a profile that cannot be read or does not fit the
   pixels refuses the image rather than being dropped silently.
6. Re-encodes from the pixels alone, so no EXIF, GPS, XMP, ICC, comment or text chunk survives: JPEG
   (quality 85, progressive), PNG (zlib level 6), WebP (quality 85), GIF, in the format it came in.
   Transparency stays (PNG, WebP and GIF keep an alpha channel or a transparent colour; a JPEG has none).
   16-bit grey PNGs become 8-bit.
7. Makes a thumbnail, longest side at most 256 px, by the same rules (of the first frame when animated).

Animated GIF, WebP and PNG keep their animation: each frame is processed the same way, with its duration
and the loop count kept. Animated stickers and reaction GIFs are a large part of what people share in chat,
freezing them silently would surprise, and refusing them would push users to other apps; the cost stays
bounded because the pixel limit counts all frames and at most `MAX_FRAMES` frames are taken. A JPEG with
several pictures (MPO, as phones write for depth or HDR gain maps) keeps its primary picture only.

Which pool: a `concurrent.futures.ProcessPoolExecutor` (`create_pool`). Decoding and encoding release the
GIL, so threads would also keep the event loop free, but a process gives isolation: a crash in a native
decoder on a hostile file kills a worker, not the server; the memory a large image takes is returned
when the worker is recycled (`max_tasks_per_child`); and the Python parts (frame loops, EXIF parsing)
never compete with the loop for the GIL. Pillow's bomb limit and warning filter are process-global, which
a worker process owns alone. The workers start by `forkserver`, because forking a server that runs an
event loop and threads can copy a held lock. The cost is pickling the bytes in and out (milliseconds for
10 MB). A broken pool (a worker died) raises `BrokenProcessPool` from `process_image`; the caller maps it
to a 503 and replaces the pool. `process` and its arguments are plain functions and bytes, so they pickle.

Memory: a decoded image takes 3-4 bytes per pixel, so one call needs up to about 4 * `max_pixels` bytes
(160 MB at the 40 MP default) plus the encoded output; size the pool's workers with that in mind."""

from __future__ import annotations

import asyncio
import functools
import io
import multiprocessing
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_SIDE = 2048
DEFAULT_MAX_PIXELS = 40_000_000
THUMBNAIL_SIDE = 256
# Beyond this many frames the per-frame work dominates even for tiny frames.
MAX_FRAMES = 1000
JPEG_QUALITY = 85
WEBP_QUALITY = 85
# A worker is replaced after this many images, returning what Pillow and the allocator kept.
TASKS_PER_WORKER = 200
# Added to a worker's niceness (0..19, higher yields more): the most, so acks go first (bench/README.md, uploads).
WORKER_NICENESS = 19

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
_ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# The colour space an ICC profile must describe for each pixel mode it is applied to.
_PROFILE_SPACES = {"RGB": "RGB", "RGBA": "RGB", "L": "GRAY", "LA": "GRAY", "CMYK": "CMYK"}


class InvalidImage(ValueError):
    """The image is too large, damaged, truncated or not an image of a supported format. The message can be
    shown to the user."""


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    thumbnail: bytes
    content_type: str
    width: int
    height: int


async def process_image(
    pool: Executor, data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ProcessedImage:
    """`process` in the pool, off the event loop. Raises InvalidImage."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, functools.partial(process, data, max_side=max_side, max_pixels=max_pixels))


def create_pool(max_workers: int) -> ProcessPoolExecutor:
    """The pool this module is meant to run in (see the module's docstring for why a process pool). Its
    workers run at a lower CPU priority: when cores are scarce the event loop (every socket's acks) goes
    first and images wait, never the other way round."""
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context("forkserver"),
        max_tasks_per_child=TASKS_PER_WORKER,
        initializer=_lower_priority,
    )


def _lower_priority() -> None:
    os.nice(WORKER_NICENESS)


def process(data: bytes, *, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> ProcessedImage:
    """The image re-encoded without metadata, in sRGB, at most `max_side` px, with a thumbnail. CPU work:
    call it through `process_image`. Raises InvalidImage."""
    if max_side < 1 or max_pixels < 1:
        raise ValueError("max_side and max_pixels must be positive")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # switched on elsewhere, truncated files would decode with grey bands
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    # Pillow's guard (a warning above the limit, an error above twice it) also covers canvases that grow
    # while a GIF decodes; with the warning as an error it refuses at exactly our limit. Both settings are
    # process-wide, hence restored after (and a process pool, where no other code shares them).
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _process(data, max_side=max_side, max_pixels=max_pixels)
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _process(data: bytes, *, max_side: int, max_pixels: int) -> ProcessedImage:
    with _decoding(max_pixels):
        im = Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "GIF", "WEBP"])
    with im:
        fmt = "JPEG" if im.format == "MPO" else im.format
        if fmt not in CONTENT_TYPES:
            raise InvalidImage("not a JPEG, PNG, GIF or WebP image")
        frames = _frame_count(im, fmt, max_pixels)
        _check_pixels(im.size, frames, max_pixels)
        if frames > 1:
            return _animated(im, fmt, frames, max_side=max_side, max_pixels=max_pixels)
        return _still(im, fmt, max_side=max_side, max_pixels=max_pixels)


@contextmanager
def _decoding(max_pixels: int) -> Iterator[None]:
    """Pillow's errors while reading the file, as InvalidImage."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImage(f"the image has more than {max_pixels:,} pixels") from err
    except UnidentifiedImageError as err:
        raise InvalidImage("not a JPEG, PNG, GIF or WebP image") from err
    except InvalidImage:
        raise
    except Exception as err:  # decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise InvalidImage("the image is damaged or truncated") from err


def _frame_count(im: Image.Image, fmt: str, max_pixels: int) -> int:
    """How many frames, read from the headers: a GIF's are skipped through without decoding, a WebP's and
    an APNG's are counted in their header. A JPEG's extra pictures (MPO) are not frames."""
    with _decoding(max_pixels):
        if fmt not in _ANIMATED_FORMATS or not getattr(im, "is_animated", False):
            return 1
        count = int(getattr(im, "n_frames", 1))
    if count > MAX_FRAMES:
        raise InvalidImage(f"the animation has {count} frames; at most {MAX_FRAMES} are accepted")
    return count


def _check_pixels(size: tuple[int, int], frames: int, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImage("the image has no pixels")
    if width * height * frames > max_pixels:
        shape = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        raise InvalidImage(f"the image is {shape} pixels; at most {max_pixels:,} pixels are accepted")


def _still(im: Image.Image, fmt: str, *, max_side: int, max_pixels: int) -> ProcessedImage:
    target = _fitted(im.size, max_side)
    if fmt == "JPEG" and target != im.size:
        im.draft(None, target)  # DCT scaling: decodes at 1/2, 1/4 or 1/8 while staying at least `target`
    with _decoding(max_pixels):
        im.load()
    icc = im.info.get("icc_profile")
    picture = _normalized(im)
    picture = _resized(picture, target)
    picture = _oriented(picture, max_pixels)
    picture = _in_srgb(picture, icc)
    picture = _for_format(picture, fmt)
    thumb = _resized(picture, _fitted(picture.size, THUMBNAIL_SIDE))
    return ProcessedImage(
        data=_encode([picture], fmt),
        thumbnail=_encode([thumb], fmt),
        content_type=CONTENT_TYPES[fmt],
        width=picture.width,
        height=picture.height,
    )


def _animated(im: Image.Image, fmt: str, frames: int, *, max_side: int, max_pixels: int) -> ProcessedImage:
    loop = im.info.get("loop")
    icc = im.info.get("icc_profile")
    pictures: list[Image.Image] = []
    durations: list[int] = []
    for index in range(frames):
        with _decoding(max_pixels):
            im.seek(index)
            frame = im.convert("RGBA")  # the frame composited onto the canvas, as it is shown
        _check_pixels(frame.size, frames, max_pixels)  # a GIF frame may grow the canvas
        durations.append(round(float(im.info.get("duration") or 0)))
        picture = _resized(frame, _fitted(frame.size, max_side))
        picture = _oriented(picture, max_pixels)
        pictures.append(_in_srgb(picture, icc))
    if all(_opaque(picture) for picture in pictures):
        pictures = [picture.convert("RGB") for picture in pictures]
    first = pictures[0]
    thumb = _resized(first, _fitted(first.size, THUMBNAIL_SIDE))
    return ProcessedImage(
        data=_encode(pictures, fmt, durations=durations, loop=loop),
        thumbnail=_encode([thumb], fmt),
        content_type=CONTENT_TYPES[fmt],
        width=first.width,
        height=first.height,
    )


def _fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return size
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(picture: Image.Image, target: tuple[int, int]) -> Image.Image:
    if picture.size == target:
        return picture
    # reducing_gap: a fast integer reduction first, then Lanczos; indistinguishable from Lanczos alone.
    return picture.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _normalized(im: Image.Image) -> Image.Image:
    """The pixels in a mode every later step handles: L, LA, RGB, RGBA or CMYK (converted with its profile
    later). A transparent palette entry or key colour becomes an alpha channel."""
    mode, keyed = im.mode, "transparency" in im.info
    if mode in ("L", "RGB", "RGBA", "LA", "CMYK") and not keyed:
        return im
    if mode in ("L", "1", "LA", "La"):
        return im.convert("LA" if keyed or mode in ("LA", "La") else "L")
    if mode.startswith("I"):  # 16- and 32-bit grey: scale to 8 bits rather than clip
        return im.point(lambda value: value / 256).convert("L")
    if mode in ("P", "RGB"):
        return im.convert("RGBA" if keyed else "RGB")
    return im.convert("RGBA" if keyed or "A" in mode or "a" in mode else "RGB")


def _oriented(picture: Image.Image, max_pixels: int) -> Image.Image:
    # `resize` and `convert` copy `info`, so the orientation read from the file's EXIF is still there.
    with _decoding(max_pixels):
        return ImageOps.exif_transpose(picture)


def _in_srgb(picture: Image.Image, icc: bytes | None) -> Image.Image:
    """The pixels converted from the embedded profile to sRGB; a CMYK image without one converted plainly."""
    if not icc:
        return picture.convert("RGB") if picture.mode == "CMYK" else picture
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        raise InvalidImage("the image's colour profile cannot be read") from err
    if _PROFILE_SPACES.get(picture.mode) != space:
        raise InvalidImage(f"the image's colour profile ({space}) does not fit its pixels ({picture.mode})")
    alpha = picture.getchannel("A") if picture.mode == "LA" else None
    source = picture.convert("L") if alpha is not None else picture
    out_mode = "RGBA" if picture.mode == "RGBA" else "RGB"
    try:
        converted = ImageCms.profileToProfile(source, profile, _SRGB, outputMode=out_mode)
    except ImageCms.PyCMSError as err:
        raise InvalidImage("the image's colour profile cannot be applied") from err
    assert converted is not None  # only None with inPlace=True
    if picture.mode in ("L", "LA"):  # grey stays grey: a neutral sRGB colour has equal channels
        converted = converted.convert("L")
        if alpha is not None:
            converted.putalpha(alpha)
    return converted


def _for_format(picture: Image.Image, fmt: str) -> Image.Image:
    if fmt == "JPEG" and picture.mode not in ("L", "RGB"):
        return picture.convert("L" if picture.mode == "LA" else "RGB")  # a JPEG never carries alpha
    return picture


def _opaque(picture: Image.Image) -> bool:
    if picture.mode not in ("RGBA", "LA"):
        return True
    lowest, _ = picture.getchannel("A").getextrema()
    return bool(lowest == 255)


def _bare(picture: Image.Image) -> Image.Image:
    """The same pixels in a new image with empty `info`: savers write `info`'s ICC profile, comments and
    more on their own, so nothing read from the upload may reach one."""
    bare = Image.new(picture.mode, picture.size)
    bare.paste(picture)
    return bare


def _encode(
    pictures: list[Image.Image], fmt: str, *, durations: list[int] | None = None, loop: int | None = None
) -> bytes:
    frames = [_bare(picture) for picture in pictures]
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options = {"quality": JPEG_QUALITY, "progressive": True, "optimize": True}
    elif fmt == "PNG":
        options = {}  # zlib level 6: "optimize" costs 4x the time for about 2% smaller files
    elif fmt == "WEBP":
        options = {"quality": WEBP_QUALITY}
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=durations)
        if loop is not None:
            options["loop"] = loop
        if fmt == "GIF" and not all(_opaque(frame) for frame in frames):
            # Each frame is the whole composited picture: clear the previous one, or its pixels would show
            # through this frame's transparent ones.
            options["disposal"] = 2
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, **options)
    return buffer.getvalue()
