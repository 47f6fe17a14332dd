"""A file's type from its first bytes (issue 13): the signatures of the ten supported types, text told from
binary, the name choosing only between md and txt, HTML/SVG/XML refused whatever the name, and which
upload categories take which types."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from services.files.types import (
    CATEGORY_KINDS,
    SNIFF_BYTES,
    TYPES,
    FileType,
    UnsupportedType,
    check_category,
    sniff,
    sniff_for,
)


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "red" if mode != "L" else 128).save(buffer, fmt)
    return buffer.getvalue()


def mp3_frame(*, padding: int = 0) -> bytes:
    # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, no CRC: 417 bytes (418 with padding).
    header = bytes([0xFF, 0xFB, 0x90 | (padding << 1), 0x64])
    return header + b"\x55" * (144 * 128_000 // 44_100 + padding - 4)


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + struct.pack(">I", 8) + b"mdat"


def wav() -> bytes:
    fmt_chunk = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    data_chunk = b"data" + struct.pack("<I", 4) + b"\x00\x00\x01\x00"
    body = b"WAVE" + fmt_chunk + data_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (image_bytes("JPEG"), "jpg"),
        (image_bytes("PNG"), "png"),
        (image_bytes("GIF"), "gif"),
        (image_bytes("WEBP"), "webp"),
        (image_bytes("WEBP", "RGBA"), "webp"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "pdf"),
        (b"ID3\x04\x00\x00\x00\x00\x01\x00" + b"\x00" * 128 + mp3_frame(), "mp3"),
        (mp3_frame() + mp3_frame(padding=1) + mp3_frame(), "mp3"),
        (wav(), "wav"),
        (ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "m4a"),
        (ftyp(b"mp42", b"M4A ", b"isom"), "m4a"),
        ("plain text, with accents: é ü ß and an emoji 🙂\n".encode(), "txt"),
    ],
)
def test_types_are_recognised_from_the_content(data: bytes, kind: str) -> None:
    found = sniff(data[:SNIFF_BYTES], filename="upload.bin", complete=len(data) <= SNIFF_BYTES)
    assert found == TYPES[kind]
    assert found.kind == found.extension == kind


def test_the_file_type_is_small_and_frozen() -> None:
    png = sniff(image_bytes("PNG"))
    assert (png.kind, png.content_type, png.extension, png.is_image) == ("png", "image/png", "png", True)
    assert not sniff(b"%PDF-1.4\n").is_image
    with pytest.raises(AttributeError):
        png.kind = "jpg"  # type: ignore[misc]
    assert {t.content_type for t in TYPES.values()} == {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "application/pdf",
        "text/plain",
        "text/markdown",
        "audio/mpeg",
        "audio/wav",
        "audio/mp4",
    }


@pytest.mark.parametrize("name", ["photo.jpg", "photo.gif", "notes.txt", "notes.md", "x.html", None])
def test_the_name_never_decides_a_binary_type(name: str | None) -> None:
    assert sniff(image_bytes("PNG"), filename=name).kind == "png"
    assert sniff(image_bytes("JPEG"), filename=name).kind == "jpg"


def test_a_png_named_photo_jpg_is_png() -> None:
    assert sniff_for("avatar", image_bytes("PNG"), filename="photo.jpg") == TYPES["png"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [("notes.md", "md"), ("NOTES.MARKDOWN", "md"), ("notes.txt", "txt"), ("notes", "txt"), (None, "txt")],
)
def test_the_name_chooses_between_markdown_and_plain_text(name: str | None, kind: str) -> None:
    assert sniff(b"# Title\n\nSome *markdown* text.\n", filename=name, complete=True).kind == kind


@pytest.mark.parametrize("name", ["picture.png", "song.mp3", "doc.pdf"])
def test_the_name_never_turns_text_into_another_type(name: str) -> None:
    assert sniff(b"just words\n", filename=name, complete=True).kind == "txt"


def test_binary_named_markdown_is_not_text() -> None:
    with pytest.raises(UnsupportedType):
        sniff(bytes(range(256)) * 4, filename="notes.md")
    with pytest.raises(UnsupportedType):
        sniff(b"text with a NUL\x00 inside", filename="notes.md", complete=True)
    with pytest.raises(UnsupportedType):
        sniff("UTF-16 text".encode("utf-16"), filename="notes.txt", complete=True)
    with pytest.raises(UnsupportedType):
        sniff(b"caf\xe9 in Latin-1", filename="notes.txt", complete=True)


def test_a_chunk_may_end_inside_a_character_but_a_whole_file_may_not() -> None:
    text = ("é" * SNIFF_BYTES).encode()
    head = text[: SNIFF_BYTES - 1]  # cut inside the last character
    assert sniff(head, filename="a.txt", complete=False).kind == "txt"
    with pytest.raises(UnsupportedType):
        sniff(head, filename="a.txt", complete=True)
    assert sniff(b"\xef\xbb\xbfwith a byte order mark", complete=True).kind == "txt"


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
        b"\n\n   <html><body>hi</body></html>",
        b"\xef\xbb\xbf<html>",
        b'<?xml version="1.0"?><root/>',
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        b"<!-- a comment first --><script>alert(1)</script>",
        b"<script>alert(1)</script>",
        b"<a href='javascript:alert(1)'>x</a>",
        b"A first line of text\n<iframe src='https://example.com'></iframe>",
        b"hello <SCRIPT>alert(1)</SCRIPT>",
    ],
)
@pytest.mark.parametrize("name", ["x.png", "x.txt", "x.md", "x.html", None])
def test_html_svg_and_xml_are_never_accepted(content: bytes, name: str | None) -> None:
    with pytest.raises(UnsupportedType, match="HTML, SVG and XML"):
        sniff(content, filename=name, complete=True)


def test_html_named_png_is_refused_for_every_category() -> None:
    for category in CATEGORY_KINDS:
        with pytest.raises(UnsupportedType):
            sniff_for(category, b"<html><body>not a picture</body></html>", filename="x.png", complete=True)


def test_text_that_mentions_angle_brackets_is_still_text() -> None:
    assert sniff(b"1 < 2 and 3 > 2\nuse a <b>bold</b> tag later on", complete=True).kind == "txt"
    assert sniff(b"x" * 600 + b"<html> far down is not sniffed", filename="a.md", complete=True).kind == "md"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff",  # a Windows executable
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # a ZIP (or Office) file
        b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8,
        b"BM" + b"\x00" * 60,  # a BMP has NULs
        b"RIFF\x24\x00\x00\x00AVI LIST",  # RIFF, but neither WAVE nor WEBP
        b"RIFF\x24\x00\x00\x00WEBPJUNK",  # WEBP without an image chunk
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dJUNK",  # a PNG signature without its header chunk
        b"\xff\xfb\x00\x00" + b"\x00" * 64,  # a frame sync with a forbidden bit rate
        mp3_frame() + b"\x00" * 8,  # a frame sync not followed by a second frame
        b"ID3\x09\x00\x00\x00\x00\x00\x00",  # an unknown ID3 version
        ftyp(b"isom", b"isom", b"avc1"),  # MPEG-4 video
        ftyp(b"heic", b"mif1", b"heic"),  # a HEIC photo
    ],
)
def test_other_content_is_unsupported(content: bytes) -> None:
    with pytest.raises(UnsupportedType):
        sniff(content, filename="file.bin", complete=True)


def test_a_generic_mpeg4_is_audio_only_when_named_m4a() -> None:
    recording = ftyp(b"isom", b"isom", b"iso2", b"mp41")
    assert sniff(recording, filename="voice note.M4A").kind == "m4a"
    with pytest.raises(UnsupportedType, match="MPEG-4"):
        sniff(recording, filename="clip.mp4")


def test_signatures_need_only_the_first_bytes() -> None:
    buffer = io.BytesIO()
    Image.effect_noise((200, 200), 64).save(buffer, "PNG")
    big_png = buffer.getvalue()
    assert len(big_png) > SNIFF_BYTES
    for data, kind in ((big_png, "png"), (mp3_frame() * 20, "mp3"), (wav() + b"\x00" * 10_000, "wav")):
        assert len(data) > SNIFF_BYTES
        assert sniff(data[:SNIFF_BYTES]).kind == kind
    # An MP3's second frame beyond the chunk cannot be checked; the first one is enough then.
    assert sniff(mp3_frame()[:100]).kind == "mp3"


@pytest.mark.parametrize(
    ("category", "accepted"),
    [
        ("avatar", {"jpg", "png", "gif", "webp"}),
        ("persona_image", {"jpg", "png", "gif", "webp"}),
        ("knowledge_base", {"txt", "md", "pdf"}),
        ("chat_attachment", set(TYPES)),
    ],
)
def test_categories_take_their_types(category: str, accepted: set[str]) -> None:
    for kind, file_type in TYPES.items():
        if kind in accepted:
            check_category(file_type, category)
        else:
            with pytest.raises(UnsupportedType, match=category):
                check_category(file_type, category)


def test_an_unknown_category_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown upload category") as caught:
        check_category(TYPES["png"], "wallpaper")
    assert not isinstance(caught.value, UnsupportedType)


def test_sniff_for_checks_the_category() -> None:
    assert sniff_for("knowledge_base", b"# notes", filename="n.md", complete=True) == FileType(
        "md", "text/markdown", "md"
    )
    with pytest.raises(UnsupportedType, match="avatar"):
        sniff_for("avatar", b"%PDF-1.4\n", filename="me.png")
    with pytest.raises(UnsupportedType, match="knowledge_base"):
        sniff_for("knowledge_base", image_bytes("GIF"), filename="notes.txt")
