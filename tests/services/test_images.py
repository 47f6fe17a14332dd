"""Uploaded images processed for storing (issue 13): EXIF orientation applied, every metadata block gone, ICC
profiles converted to sRGB, resized, transparency kept, thumbnails, animations kept, and decompression
bombs, truncated and corrupt files refused before they cost memory. Every image is made here by Pillow."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageSequence, JpegImagePlugin, PngImagePlugin

from services.files import images
from services.files.images import InvalidImage, ProcessedImage, create_pool, process, process_image

XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="Secret Photographer"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
# What metadata looks like inside the encoded bytes: EXIF, XMP, PNG text and profile chunks, JPEG's ICC marker.
METADATA_MARKERS: tuple[bytes, ...] = (
    b"Exif",
    b"http://ns.adobe.com/xap",
    b"xmpmeta",
    b"tEXt",
    b"zTXt",
    b"iTXt",
    b"eXIf",
    b"iCCP",
)
METADATA_MARKERS += (b"ICC_PROFILE", b"Secret")


def encode(im: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def assert_no_metadata(data: bytes) -> None:
    im = decode(data)
    assert not dict(im.getexif())
    for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "Comment", "Author"):
        assert key not in im.info
    assert not getattr(im, "text", {})
    for marker in METADATA_MARKERS:
        assert marker not in data, marker


def quadrants(size: tuple[int, int]) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right: shows any rotation or flip."""
    width, height = size
    im = Image.new("RGB", size)
    im.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    im.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    im.paste((0, 0, 255), (0, height // 2, width // 2, height))
    im.paste((255, 255, 255), (width // 2, height // 2, width, height))
    return im


def px(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = im.getpixel(xy)
    return pixel if isinstance(pixel, tuple) else (int(pixel),)  # type: ignore[arg-type]


def near(pixel: Any, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def tagged_jpeg(orientation: int, size: tuple[int, int] = (400, 200)) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "Secret Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.0)
    return encode(quadrants(size), "JPEG", quality=95, exif=exif, xmp=XMP, comment=b"Secret comment")


# --- an RGB ICC profile that is not sRGB: Adobe RGB (1998) primaries and gamma, as a v2 matrix/TRC profile


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def adobe_rgb_like_profile() -> bytes:
    name = b"Adobe RGB (1998)-like test profile"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(name) + 1) + name + b"\0" + struct.pack(">IIHB", 0, 0, 0, 0)
    desc += b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"  # gamma 563/256, about 2.2
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.60974, 0.31111, 0.01947)),
        (b"gXYZ", _xyz(0.20528, 0.62567, 0.06087)),
        (b"bXYZ", _xyz(0.14919, 0.06322, 0.74457)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = body = b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + b"\0\0\0\0" + struct.pack(">I", 0x02100000)
    header += b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28 + _xyz(0.9642, 1.0, 0.8249)[8:] + b"\0" * 48
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
ADOBE = adobe_rgb_like_profile()


def in_srgb(colour: tuple[int, int, int], icc: bytes) -> tuple[int, ...]:
    """What lcms makes of `colour` in the profile, as the reference the processed pixels must match."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    converted = ImageCms.profileToProfile(Image.new("RGB", (1, 1), colour), source, SRGB)
    assert converted is not None
    return px(converted, (0, 0))


# --- orientation and metadata


@pytest.mark.parametrize(
    ("orientation", "top_left", "top_right"),
    [
        (6, (0, 0, 255), (255, 0, 0)),  # rotated 90 degrees clockwise: the left column becomes the top row
        (8, (0, 255, 0), (255, 255, 255)),  # rotated 90 degrees counter-clockwise
    ],
)
def test_exif_orientation_is_applied_and_every_metadata_block_removed(
    orientation: int, top_left: tuple[int, int, int], top_right: tuple[int, int, int]
) -> None:
    source = tagged_jpeg(orientation)
    before = decode(source)
    assert before.getexif()[ExifTags.Base.Orientation] == orientation
    assert before.getexif().get_ifd(ExifTags.IFD.GPSInfo) and "xmp" in before.info and "comment" in before.info

    result = process(source)

    assert (result.width, result.height) == (200, 400)  # width and height swapped
    assert result.content_type == "image/jpeg"
    out = decode(result.data)
    assert (out.format, out.size, out.mode) == ("JPEG", (200, 400), "RGB")
    assert out.info.get("progressive")
    assert near(px(out, (10, 10)), top_left)
    assert near(px(out, (190, 10)), top_right)
    assert_no_metadata(result.data)
    assert_no_metadata(result.thumbnail)
    assert decode(result.thumbnail).size == (128, 256)


def test_png_text_chunks_exif_and_xmp_are_removed() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Secret comment")
    info.add_text("Author", "Secret author", zip=True)
    info.add_itxt("Description", "Secret description", lang="en")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Secret Camera"
    source = encode(quadrants((64, 48)), "PNG", pnginfo=info, exif=exif)
    before = decode(source)
    assert before.text and "exif" in before.info  # type: ignore[attr-defined]

    result = process(source)

    assert result.content_type == "image/png"
    assert decode(result.data).size == (64, 48)
    assert_no_metadata(result.data)
    assert_no_metadata(result.thumbnail)


def test_png_stays_png_and_webp_and_gif_keep_their_format() -> None:
    for fmt, content_type in (("PNG", "image/png"), ("WEBP", "image/webp"), ("GIF", "image/gif")):
        result = process(encode(quadrants((40, 30)), fmt))
        assert result.content_type == content_type
        assert decode(result.data).format == decode(result.thumbnail).format == fmt
        assert_no_metadata(result.data)


# --- size limits


def test_large_images_are_resized_to_max_side_with_a_small_thumbnail() -> None:
    source = encode(quadrants((3000, 1000)), "JPEG")
    result = process(source)
    assert (result.width, result.height) == (2048, 683)
    assert decode(result.data).size == (2048, 683)
    thumb = decode(result.thumbnail)
    assert thumb.size == (256, 85)
    assert near(px(thumb, (10, 10)), (255, 0, 0), 30)  # a resize, not a crop

    small = process(source, max_side=100)
    assert (small.width, small.height) == (100, 33)
    assert decode(small.thumbnail).size == (100, 33)  # never larger than the image


def test_a_jpeg_many_times_too_large_is_decoded_at_a_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded_at: list[tuple[int, int]] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        chosen = real_draft(self, mode, size)
        decoded_at.append(self.size)
        return chosen

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = process(encode(quadrants((4000, 1000)), "JPEG"), max_side=900)
    assert decoded_at == [(1000, 250)]  # a quarter of the size, then Lanczos for the rest
    assert (result.width, result.height) == (900, 225)
    assert near(px(decode(result.data), (10, 10)), (255, 0, 0))


def small_bomb_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A valid 1-bit greyscale PNG of width x height pixels, all black, in a few kilobytes: 100 megapixels
    compress to nothing. Written by hand because Pillow would need the 100 MB of pixels to save it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every decode of a file's pixels (ImageFile.load), recorded."""
    calls: list[str] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        calls.append(f"{self.format} {self.size}")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    yield calls


def test_a_100_megapixel_png_of_a_few_kb_is_refused_before_decoding(loads: list[str]) -> None:
    bomb = small_bomb_png()
    assert len(bomb) < 20_000
    with pytest.warns(Image.DecompressionBombWarning):
        assert Image.open(io.BytesIO(bomb)).size == (10_000, 10_000)  # a real PNG, only its header read
    with pytest.raises(InvalidImage, match="40,000,000 pixels"):
        process(bomb)
    assert loads == []


def test_the_pixel_limit_is_exact_and_pillows_own_limit_is_restored(loads: list[str]) -> None:
    before = Image.MAX_IMAGE_PIXELS
    source = encode(Image.new("RGB", (600, 500)), "PNG")  # 300,000 pixels
    with pytest.raises(InvalidImage, match="pixels"):
        process(source, max_pixels=299_999)
    assert loads == []
    assert Image.MAX_IMAGE_PIXELS == before
    assert process(source, max_pixels=300_000).width == 600
    assert Image.MAX_IMAGE_PIXELS == before


def test_an_animation_counts_the_pixels_of_every_frame(loads: list[str]) -> None:
    frames = [Image.new("RGB", (100, 100), (i * 20, 0, 0)) for i in range(10)]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(InvalidImage, match="100x100 x 10 frames"):
        process(source, max_pixels=99_999)
    assert loads == []
    assert process(source, max_pixels=100_000).width == 100


def test_too_many_frames_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_FRAMES", 5)
    frames = [Image.new("RGB", (2, 2), (i * 40, 0, 0)) for i in range(6)]
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    with pytest.raises(InvalidImage, match="6 frames"):
        process(source)


# --- broken files


def test_truncated_and_corrupt_images_are_invalid() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    jpeg = encode(Image.effect_noise((300, 200), 40).convert("RGB"), "JPEG")
    png = encode(Image.effect_noise((300, 200), 40), "PNG")
    broken = [
        jpeg[: len(jpeg) // 2],
        jpeg[:-2],  # only the end marker missing
        png[: len(png) // 2],
        jpeg[:200] + bytes(len(jpeg) - 200),  # the entropy-coded data zeroed
        png[:33] + b"\x00\x00\x10\x00IDAT" + b"garbage" * 100,  # a PNG whose data is not zlib
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"GIF89a\x10\x00\x10\x00",
        b"<html><body>not an image</body></html>",
        b"",
    ]
    for data in broken:
        with pytest.raises(InvalidImage):
            process(data)


def test_other_image_formats_are_refused() -> None:
    for fmt in ("BMP", "TIFF", "ICO", "PPM"):
        with pytest.raises(InvalidImage, match="not a JPEG, PNG, GIF or WebP image"):
            process(encode(Image.new("RGB", (16, 16)), fmt))


def test_truncated_images_must_not_be_loadable_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        process(encode(Image.new("RGB", (8, 8)), "PNG"))


# --- transparency and modes


def transparent_picture(mode: str = "RGBA") -> Image.Image:
    im = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 40, 60))
    im.paste((0, 0, 255, 128), (40, 0, 60, 60))
    return im if mode == "RGBA" else im.convert(mode)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_alpha_is_kept(fmt: str) -> None:
    result = process(encode(transparent_picture(), fmt))
    for data in (result.data, result.thumbnail):
        out = decode(data).convert("RGBA")
        width = out.width
        assert px(out, (2, 2))[3] == 255
        assert near(px(out, (2, 2))[:3], (255, 0, 0))
        assert near((px(out, (width * 5 // 8, 2))[3],), (128,), 8)  # half transparent stays half
        assert px(out, (width - 2, 2))[3] == 0


def test_grey_with_alpha_stays_grey_with_alpha() -> None:
    im = Image.new("LA", (20, 20), (200, 0))
    im.paste((50, 255), (0, 0, 10, 20))
    out = decode(process(encode(im, "PNG")).data)
    assert out.mode == "LA"
    assert px(out, (2, 2)) == (50, 255) and px(out, (18, 2))[1] == 0


def test_palette_and_key_colour_transparency_are_kept() -> None:
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.paste(2, (0, 0, 10, 20))  # green on the left, transparent red on the right
    for fmt in ("PNG", "GIF"):
        out = decode(process(encode(palette, fmt, transparency=1)).data).convert("RGBA")
        assert near(px(out, (2, 2)), (0, 255, 0, 255)), fmt
        assert px(out, (18, 2))[3] == 0, fmt
    keyed = Image.new("RGB", (20, 20), (1, 2, 3))
    keyed.paste((0, 0, 255), (0, 0, 10, 20))
    out = decode(process(encode(keyed, "PNG", transparency=(1, 2, 3))).data)
    assert out.mode == "RGBA"
    assert px(out, (2, 2)) == (0, 0, 255, 255) and px(out, (18, 2))[3] == 0


def test_a_transparent_gif_stays_transparent() -> None:
    im = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 20, 20))
    result = process(encode(im, "GIF"))
    for data in (result.data, result.thumbnail):
        out = decode(data)
        assert out.format == "GIF" and "transparency" in out.info
        assert px(out.convert("RGBA"), (38, 2))[3] == 0
        assert px(out.convert("RGBA"), (2, 2)) == (255, 0, 0, 255)


def test_grey_jpegs_stay_grey_and_16_bit_grey_is_scaled_not_clipped() -> None:
    grey = decode(process(encode(Image.new("L", (10, 10), 77), "JPEG")).data)
    assert grey.mode == "L" and near(px(grey, (5, 5)), (77,), 2)
    deep = decode(process(encode(Image.new("I;16", (10, 10), 32768), "PNG")).data)
    assert deep.mode == "L" and px(deep, (5, 5)) == (128,)


def test_a_cmyk_jpeg_becomes_rgb() -> None:
    result = process(encode(Image.new("CMYK", (10, 10), (0, 255, 255, 0)), "JPEG"))
    out = decode(result.data)
    assert out.mode == "RGB" and near(px(out, (5, 5)), (255, 0, 0))


def test_a_multi_picture_jpeg_keeps_its_primary_picture() -> None:
    primary, secondary = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (20, 10), (0, 0, 255))
    source = encode(primary, "MPO", save_all=True, append_images=[secondary])
    assert Image.open(io.BytesIO(source)).format == "MPO"
    result = process(source)
    out = decode(result.data)
    assert (out.format, out.size, getattr(out, "n_frames", 1)) == ("JPEG", (40, 30), 1)
    assert near(px(out, (5, 5)), (255, 0, 0))


# --- colour profiles


def test_the_test_profile_is_an_rgb_profile_that_is_not_srgb() -> None:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE))
    assert profile.profile.xcolor_space == "RGB "
    assert "Adobe RGB" in ImageCms.getProfileDescription(profile)
    assert in_srgb((180, 120, 100), ADOBE) != (180, 120, 100)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_non_srgb_profile_is_converted_then_removed(fmt: str) -> None:
    colour = (180, 120, 100)
    expected = in_srgb(colour, ADOBE)
    assert max(abs(a - b) for a, b in zip(expected, colour, strict=True)) >= 10  # a visible change
    lossless: dict[str, dict[str, Any]] = {"JPEG": {"quality": 100}, "PNG": {}, "WEBP": {"lossless": True}}
    source = encode(Image.new("RGB", (32, 32), colour), fmt, icc_profile=ADOBE, **lossless[fmt])
    assert decode(source).info.get("icc_profile") == ADOBE

    result = process(source)

    out = decode(result.data)
    assert near(px(out, (16, 16)), expected, 4 if fmt == "PNG" else 6)
    assert not near(px(out, (16, 16)), colour, 6)
    assert_no_metadata(result.data)
    assert_no_metadata(result.thumbnail)


def test_a_profile_on_transparent_pixels_keeps_the_alpha() -> None:
    im = Image.new("RGBA", (16, 16), (180, 120, 100, 255))
    im.paste((180, 120, 100, 0), (8, 0, 16, 16))
    out = decode(process(encode(im, "PNG", icc_profile=ADOBE)).data)
    assert out.mode == "RGBA" and "icc_profile" not in out.info
    assert near(px(out, (2, 2)), (*in_srgb((180, 120, 100), ADOBE), 255), 4)
    assert px(out, (12, 2))[3] == 0


def test_an_srgb_profile_leaves_the_pixels_as_they_are_and_is_removed() -> None:
    srgb_bytes = SRGB.tobytes()
    result = process(encode(Image.new("RGB", (16, 16), (180, 120, 100)), "PNG", icc_profile=srgb_bytes))
    out = decode(result.data)
    assert near(px(out, (4, 4)), (180, 120, 100), 2)
    assert "icc_profile" not in out.info


def test_a_profile_that_cannot_be_used_refuses_the_image_rather_than_being_dropped() -> None:
    rgb = Image.new("RGB", (8, 8), (10, 20, 30))
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    with pytest.raises(InvalidImage, match="colour profile cannot be read"):
        process(encode(rgb, "PNG", icc_profile=b"not a profile at all" * 10))
    with pytest.raises(InvalidImage, match="does not fit"):
        process(encode(rgb, "PNG", icc_profile=lab))
    with pytest.raises(InvalidImage, match="does not fit"):
        process(encode(Image.new("L", (8, 8)), "PNG", icc_profile=ADOBE))


# --- animations


def animation_frames(count: int = 4, size: tuple[int, int] = (300, 150), alpha: bool = False) -> list[Image.Image]:
    frames = []
    for index in range(count):
        frame = Image.new("RGBA", size, (0, 0, 0, 0) if alpha else (255, 255, 255, 255))
        left = index * size[0] // count
        frame.paste((255, 0, 0, 255), (left, 0, left + size[0] // count, size[1]))
        frames.append(frame)
    return frames


def shown(data: bytes) -> list[tuple[Image.Image, int]]:
    """Every frame of an animation as it is displayed, with its duration."""
    im = Image.open(io.BytesIO(data))
    return [(frame.convert("RGBA"), frame.info.get("duration", 0)) for frame in ImageSequence.Iterator(im)]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
@pytest.mark.parametrize("alpha", [False, True])
def test_animations_keep_their_frames_durations_and_loop(fmt: str, alpha: bool) -> None:
    frames = animation_frames(alpha=alpha)
    # A GIF frame with transparent pixels must clear the previous one to show them (disposal 2).
    disposal = {"disposal": 2} if fmt == "GIF" and alpha else {}
    source = encode(
        frames[0], fmt, save_all=True, append_images=frames[1:], duration=[100, 200, 300, 400], loop=3, **disposal
    )
    assert getattr(Image.open(io.BytesIO(source)), "n_frames", 1) == 4

    result = process(source, max_side=150)

    assert (result.width, result.height) == (150, 75)
    out = Image.open(io.BytesIO(result.data))
    assert out.format == fmt and getattr(out, "n_frames", 1) == 4
    assert out.info.get("loop") == 3
    displayed = shown(result.data)
    assert [duration for _, duration in displayed] == [100, 200, 300, 400]
    for index, (frame, _) in enumerate(displayed):
        assert frame.size == (150, 75)
        for slot in range(4):
            x = slot * 150 // 4 + 150 // 8
            pixel = px(frame, (x, 37))
            if slot == index:
                assert near(pixel, (255, 0, 0, 255), 30), (index, slot, pixel)
            elif alpha:
                assert pixel[3] == 0, (index, slot, pixel)
            else:
                assert near(pixel, (255, 255, 255, 255), 30), (index, slot, pixel)
    thumb = Image.open(io.BytesIO(result.thumbnail))
    assert thumb.format == fmt and getattr(thumb, "n_frames", 1) == 1 and thumb.size == (150, 75)
    assert_no_metadata(result.data)


def test_an_animated_gif_without_a_loop_count_still_plays_once() -> None:
    frames = animation_frames(count=2, size=(20, 20))
    source = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    assert "loop" not in Image.open(io.BytesIO(source)).info
    out = Image.open(io.BytesIO(process(source).data))
    assert getattr(out, "n_frames", 1) == 2 and "loop" not in out.info


def test_an_animation_thumbnail_is_its_first_frame_at_most_256_px() -> None:
    frames = animation_frames(count=3, size=(600, 300))
    result = process(encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0))
    thumb = decode(result.thumbnail)
    assert thumb.size == (256, 128)
    assert near(px(thumb.convert("RGB"), (10, 64)), (255, 0, 0), 30)
    assert near(px(thumb.convert("RGB"), (128, 64)), (255, 255, 255), 30)


# --- the pool


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with create_pool(1) as executor:
        yield executor


async def test_process_image_runs_in_a_real_process_pool(pool: ProcessPoolExecutor) -> None:
    source = tagged_jpeg(6, size=(3000, 1500))
    result = await process_image(pool, source, max_side=1000, max_pixels=40_000_000)
    assert isinstance(result, ProcessedImage)
    assert (result.width, result.height) == (500, 1000)
    assert_no_metadata(result.data)
    with pytest.raises(InvalidImage, match="pixels"):
        await process_image(pool, small_bomb_png(), max_side=2048, max_pixels=40_000_000)
    with pytest.raises(InvalidImage, match="damaged or truncated"):
        await process_image(pool, source[: len(source) // 2])
    # The worker survived the refusals, and several images go through at once.
    sizes = await asyncio.gather(*(process_image(pool, source, max_side=side) for side in (100, 200, 300)))
    assert [max(r.width, r.height) for r in sizes] == [100, 200, 300]


async def test_the_event_loop_stays_free_while_an_image_is_processed(pool: ProcessPoolExecutor) -> None:
    source = encode(Image.effect_noise((4000, 3000), 50).convert("RGB"), "JPEG")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await process_image(pool, source)
    finally:
        task.cancel()
    assert ticks > 5
