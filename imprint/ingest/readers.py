"""Readers that turn one file (.txt, .md, .html, .pdf) into a title and clean plain text.

Why one small module: every format ends as the same thing, paragraphs separated by blank lines, so the
chunker and everything downstream see one shape of text. Bad input is refused loudly with an `IngestError`
that names the file and says what to do; nothing is guessed (binary junk is never decoded as latin-1, a
scanned PDF is not stored as an empty document).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from imprint.errors import IngestError

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
HTML_SUFFIXES = (".html", ".htm")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES

_DROP_TAGS = ["script", "style", "nav", "noscript", "template", "svg", "head", "iframe"]
_BLOCK_TAGS = [
    "p", "div", "section", "article", "main", "aside", "header", "footer", "blockquote", "pre", "ul", "ol", "li",
    "dl", "dt", "dd", "table", "thead", "tbody", "tr", "figure", "figcaption", "address", "hr", "details", "summary",
]  # fmt: skip
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*(?:\n|\Z)", re.S)
_CONTROL = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def read_file(path: Path | str) -> tuple[str, str]:
    """(title, text) of one file; raises `IngestError` naming the file when it cannot give usable text."""
    path = Path(path)
    if not path.exists():
        raise IngestError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise IngestError(f"{path}: is a directory; pass it to `imprint add` to read the files inside")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; supported: {' '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from exc
    if not data.strip():
        raise IngestError(f"{path}: the file is empty; add text to it or leave it out")
    if suffix in PDF_SUFFIXES:
        title, text = path.stem, read_pdf(path)
    elif suffix in HTML_SUFFIXES:
        title, text = read_html(decode_text(data, path), fallback_title=path.stem)
    else:
        title, text = read_markdown(decode_text(data, path), fallback_title=path.stem)
    if not text:
        hint = " (a scanned PDF? run OCR on it first, e.g. ocrmypdf)" if suffix in PDF_SUFFIXES else ""
        raise IngestError(f"{path}: no text left after extraction{hint}; leave it out or convert it to text")
    return title, text


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 (with or without a byte-order mark, or UTF-16 with one); anything else is refused, not guessed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass  # a UTF-16 mark on bytes that are not UTF-16: fall through to the binary check below
    if b"\x00" in data:
        raise IngestError(f"{path}: looks like a binary file (it contains NUL bytes); give a text, HTML or PDF file")
    try:
        return data.decode("utf-8-sig")  # plain UTF-8, minus a leading byte-order mark if there is one
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: not UTF-8 text (invalid byte at offset {exc.start}): binary, or another encoding; "
            "convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def normalize_text(text: str) -> str:
    """Collapse runs of spaces inside lines, drop control characters and NUL, keep one blank line between
    paragraphs, and strip the ends."""
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    text = _CONTROL.sub(" ", text)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def read_markdown(text: str, fallback_title: str) -> tuple[str, str]:
    """Markdown or plain text: the title is a front-matter `title:`, else the first `# ` heading, else the stem."""
    title = None
    front = _FRONT_MATTER.match(text)
    if front:
        text = text[front.end() :]
        match = re.search(r"^title:\s*(.+?)\s*$", front.group(1), re.M)
        if match:
            title = match.group(1).strip("\"'")
    text = normalize_text(text)
    if not title:
        heading = _HEADING.search(text)
        title = heading.group(1) if heading else None
    return title or fallback_title, text


def read_html(html: str, fallback_title: str) -> tuple[str, str]:
    """HTML to paragraphs: scripts, styles and navigation dropped, headings kept as markdown `#` lines so the
    chunker keeps them with their section; the title is <title>, else the first <h1>, else the stem."""
    from bs4 import BeautifulSoup, Comment, Declaration, Doctype, ProcessingInstruction

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and soup.h1:
        title = soup.h1.get_text(" ", strip=True)
    for tag in soup(_DROP_TAGS):
        tag.decompose()
    for node in soup.find_all(string=True):
        if isinstance(node, Comment | Declaration | Doctype | ProcessingInstruction):
            node.extract()
        elif not node.find_parent("pre"):
            # Source line breaks are just spaces; only the structure below decides where paragraphs break.
            node.replace_with(re.sub(r"\s+", " ", str(node)))
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.insert_before("\n\n" + "#" * level + " ")
            heading.insert_after("\n\n")
    for block in soup.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    return title or fallback_title, normalize_text(soup.get_text())


def read_pdf(path: Path) -> str:
    """Text of every page, reflowed into paragraphs; corrupt and password-protected PDFs are refused."""
    from pypdf import PdfReader

    # pypdf logs a warning for every repairable flaw; they are noise to a user, and real failures raise below.
    pypdf_logger = logging.getLogger("pypdf")
    level = pypdf_logger.level
    pypdf_logger.setLevel(logging.ERROR)
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError(
                f"{path}: the PDF is password-protected; save an unprotected copy (e.g. `qpdf --decrypt`) and add that"
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except IngestError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files; all mean "cannot read this PDF"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(f"{path}: not a readable PDF ({reason}); check the file opens in a PDF viewer") from exc
    finally:
        pypdf_logger.setLevel(level)
    return normalize_text("\n\n".join(reflow_pdf_lines(page) for page in pages))


def reflow_pdf_lines(page: str) -> str:
    """Join the hard line breaks of PDF layout back into paragraphs.

    A line ending a sentence (., !, ?, :), an empty line, or a next line starting with a bullet ends a
    paragraph; any other break is a space, and a word hyphenated across lines is rejoined.
    """
    out: list[str] = []
    for raw in page.split("\n"):
        line = " ".join(raw.split())
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        if (
            not out
            or out[-1] == ""
            or re.search(r"[.!?:][\"')\]”’]*$", out[-1])
            or re.match(r"[•\-*–]\s|\d+[.)]\s", line)
        ):
            if out and out[-1] != "":
                out.append("")
            out.append(line)
        elif re.search(r"[a-z]-$", out[-1]) and line[:1].islower():
            out[-1] = out[-1][:-1] + line
        else:
            out[-1] = out[-1] + " " + line
    return "\n".join(out)
