"""Ingest end to end on real files and a real SQLite workspace: readers, directory walks, versions, and bad
input refused with the workspace left exactly as it was."""

import io
import random

import pytest
from pypdf import PdfWriter

from imprint.errors import IngestError
from imprint.ingest import collect_files, ingest_paths, normalize_text, read_file
from imprint.workspace import Workspace


def words(text):
    return len(text.split())


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal valid PDF, one text line per string, with a correct cross-reference table."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        ops = " ".join("(" + line.replace("(", r"\(").replace(")", r"\)") + ") Tj T*" for line in lines)
        content = f"BT /F1 12 Tf 14 TL 72 720 Td {ops} ET"
        objects.append(f"<< /Length {len(content)} >>\nstream\n{content}\nendstream")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


HTML = """<!doctype html><html><head><title>Leave Policy</title><style>p {color: red}</style></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<h1>Annual   leave</h1>
<p>Employees receive
   27 days of <b>paid</b> leave.</p><script>var tracking = 1;</script>
<p>Requests go to HR.<br>Allow two weeks.</p><!-- a comment -->
<ul><li>Item one</li><li>Item two</li></ul></body></html>"""


@pytest.fixture
def ws(tmp_path):
    with Workspace.open(tmp_path / "ws") as workspace:
        yield workspace


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Handbook\n\nEmployees receive 27 days of leave. Dr. Lee approves it.\n")
    (root / "sub" / "b.txt").write_text("Plain text notes.\n\n\n\nSecond   paragraph.")
    (root / "sub" / "c.html").write_text(HTML)
    (root / "sub" / "d.pdf").write_bytes(make_pdf([["Quarterly report."], ["Revenue grew by 12 percent."]]))
    (root / ".hidden.md").write_text("secret")
    (root / ".git").mkdir()
    (root / ".git" / "config.md").write_text("not a document")
    (root / "image.png").write_bytes(b"\x89PNG\r\n")
    return root


def test_markdown_title_and_whitespace(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("Intro line\r\n\r\n\r\n# The   Title\n\ttabbed\x0b text  here\n")
    assert read_file(path) == ("The Title", "Intro line\n\n# The Title\ntabbed text here")
    assert normalize_text("NUL\x00 stripped\u00a0here") == "NUL stripped here"  # NUL from PDF/HTML extraction
    plain = tmp_path / "plain.txt"
    plain.write_text("No heading here.")
    assert read_file(plain) == ("plain", "No heading here.")


def test_front_matter_gives_the_title_and_is_dropped(tmp_path):
    path = tmp_path / "post.markdown"
    path.write_text('---\ntitle: "Travel rules"\ndate: 2024-01-01\n---\n# Heading\n\nBody.')
    assert read_file(path) == ("Travel rules", "# Heading\n\nBody.")


def test_byte_order_marks_are_handled(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfHello there.")
    assert read_file(path) == ("bom", "Hello there.")
    path.write_bytes("Grüße aus Köln.".encode("utf-16"))
    assert read_file(path)[1] == "Grüße aus Köln."


def test_html_drops_scripts_styles_navigation_and_keeps_paragraphs(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(HTML)
    title, text = read_file(path)
    assert title == "Leave Policy"
    assert text == (
        "# Annual leave\n\nEmployees receive 27 days of paid leave.\n\nRequests go to HR.\nAllow two weeks."
        "\n\nItem one\n\nItem two"
    )
    path.write_text("<html><body><h1>Only <i>heading</i></h1><p>Body.</p></body></html>")
    assert read_file(path)[0] == "Only heading"


def test_pdf_pages_are_joined_and_lines_reflowed(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(
        make_pdf([["Quarterly report.", "Revenue grew by 12 per-", "cent in the third", "quarter."], ["End."]])
    )
    assert read_file(path) == (
        "report",
        "Quarterly report.\n\nRevenue grew by 12 percent in the third quarter.\n\nEnd.",
    )


def test_directory_walk_is_recursive_sorted_and_skips_hidden_and_unsupported(corpus):
    files, skipped = collect_files([corpus])
    assert [f.relative_to(corpus).as_posix() for f in files] == ["a.md", "sub/b.txt", "sub/c.html", "sub/d.pdf"]
    assert sorted(skipped) == sorted(str(corpus / n) for n in (".git", ".hidden.md", "image.png"))


def test_ingest_versions_and_restores(ws, corpus):
    report = ingest_paths(ws, [corpus], words, max_tokens=8)
    uris = [str((corpus / n).resolve()) for n in ("a.md", "sub/b.txt", "sub/c.html", "sub/d.pdf")]
    assert report.added == uris and not (report.updated or report.unchanged or report.restored)
    assert len(report.skipped) == 3
    assert {d.title for d in ws.documents()} == {"Handbook", "b", "Leave Policy", "d"}
    assert all(c.n_tokens <= 8 for c in ws.chunks())

    counts = ws.counts()
    again = ingest_paths(ws, [corpus], words, max_tokens=8)
    assert again.unchanged == uris and not again.changed
    assert ws.counts() == counts

    (corpus / "a.md").write_text("# Handbook\n\nEmployees receive 30 days of leave.\n")
    report = ingest_paths(ws, [corpus / "a.md", corpus / "sub" / "b.txt"], words)
    assert (report.updated, report.unchanged) == ([uris[0]], [uris[1]])
    assert ws.get_document(uris[0]).version == 2
    assert "30 days" in " ".join(c.text for c in ws.chunks([ws.get_document(uris[0]).id]))

    ws.remove_document(uris[1])
    assert ingest_paths(ws, [corpus / "sub" / "b.txt"], words).restored == [uris[1]]


def test_same_file_named_twice_is_read_once(ws, corpus):
    report = ingest_paths(ws, [corpus / "a.md", corpus, corpus / "a.md"], words)
    assert len(report.added) == 4


def test_progress_is_reported_per_file(ws, corpus):
    seen = []
    ingest_paths(ws, [corpus / "sub"], words, progress=lambda done, total, info: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


BAD_FILES = {
    "missing.md": None,
    "table.csv": b"a,b\n1,2\n",
    "noext": b"some text",
    "empty.txt": b"",
    "blank.md": b"   \n\n\t\n",
    "nul.txt": b"text\x00with a NUL byte",
    "latin1.md": "Caf\u00e9 cr\u00e8me".encode("latin-1"),
    "random.txt": bytes(random.Random(1).randrange(128, 256) for _ in range(300)),
    "corrupt.pdf": bytes(random.Random(0).randrange(256) for _ in range(400)),
    "truncated.pdf": make_pdf([["Hello world."]])[:150],
    "encrypted.pdf": encrypted_pdf(),
    "scanned.pdf": make_pdf([[]]),
    "scripts.html": b"<html><body><script>alert(1)</script><nav>Home</nav></body></html>",
    "only-front-matter.md": b"---\ntitle: x\n---\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_input_raises_and_leaves_the_workspace_unchanged(ws, corpus, tmp_path, name):
    ingest_paths(ws, [corpus / "a.md"], words)
    before, counts, corpus_version = ws.documents(include_deleted=True), ws.counts(), ws.corpus_version()
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    if BAD_FILES[name] is not None:
        bad.write_bytes(BAD_FILES[name])
    (corpus / "a.md").write_text("# Handbook\n\nChanged text, which must not be stored.")

    with pytest.raises(IngestError) as info:
        ingest_paths(ws, [corpus / "a.md", corpus / "sub" / "b.txt", bad], words)
    message = str(info.value)
    assert name in message and "\n" not in message
    assert ws.documents(include_deleted=True) == before
    assert ws.counts() == counts and ws.corpus_version() == corpus_version


@pytest.mark.parametrize(
    "name, hint",
    [
        ("table.csv", "supported: .txt .md .markdown .html .htm .pdf"),
        ("nul.txt", "binary"),
        ("latin1.md", "UTF-8"),
        ("empty.txt", "empty"),
        ("scanned.pdf", "OCR"),
        ("encrypted.pdf", "password"),
        ("corrupt.pdf", "not a readable PDF"),
    ],
)
def test_error_messages_say_what_to_do(tmp_path, name, hint):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(IngestError, match=hint):
        read_file(path)


def test_every_bad_file_is_named_in_one_message(ws, tmp_path):
    (tmp_path / "one.txt").write_bytes(b"")
    (tmp_path / "two.txt").write_bytes(b"\x00\x01")
    (tmp_path / "good.txt").write_text("Fine.")
    with pytest.raises(IngestError, match=r"one\.txt.*1 more failed: .*two\.txt"):
        ingest_paths(ws, [tmp_path / "good.txt", tmp_path / "one.txt", tmp_path / "two.txt"], words)
    assert ws.counts()["documents"] == 0


def test_directories_without_documents_and_empty_calls_are_errors(ws, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "photo.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(IngestError, match="no files to add"):
        ingest_paths(ws, [tmp_path / "empty"], words)
    with pytest.raises(IngestError, match="no files given"):
        ingest_paths(ws, [], words)
