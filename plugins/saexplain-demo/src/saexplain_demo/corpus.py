"""The demo's text: an English corpus built from the standard library (the dataset `demo`), and
the demo's cache folder.

`demo_corpus()` reads the docstrings in the source files of a fixed list of standard-library
modules (module, public classes and their public methods, public functions, in source order),
keeps the prose paragraphs (code samples, tables and option lists are dropped), normalises
whitespace and removes repeated paragraphs. Nothing is downloaded, imported or rendered with
pydoc: it takes about a second, and it does not depend on what else the process has imported. It
is the same on every machine with the same Python minor version (docstrings change little between
versions; modules missing from a Python build are skipped).
"""

from __future__ import annotations

import ast
import inspect
import re
import sysconfig
from functools import cache
from pathlib import Path

from saexplain.files import cache_dir

__all__ = ["DEMO_MODULES", "default_cache_dir", "demo_corpus"]

# Pure-Python modules with well-written docstrings that exist on every platform and import
# without side effects. Order matters (it is the corpus order); append, never reorder.
DEMO_MODULES: tuple[str, ...] = (
    "abc",
    "argparse",
    "ast",
    "asyncio",
    "base64",
    "bisect",
    "bz2",
    "calendar",
    "cmd",
    "codecs",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "dis",
    "doctest",
    "email.message",
    "email.utils",
    "enum",
    "filecmp",
    "fileinput",
    "fnmatch",
    "fractions",
    "ftplib",
    "functools",
    "getopt",
    "gettext",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "html.parser",
    "http.client",
    "http.cookiejar",
    "http.cookies",
    "http.server",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "locale",
    "logging",
    "logging.handlers",
    "lzma",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pickle",
    "pkgutil",
    "platform",
    "poplib",
    "pprint",
    "profile",
    "pstats",
    "queue",
    "quopri",
    "random",
    "re",
    "reprlib",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "socketserver",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "tokenize",
    "trace",
    "traceback",
    "types",
    "typing",
    "unittest.case",
    "unittest.mock",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "wave",
    "weakref",
    "xml.dom.minidom",
    "xml.etree.ElementTree",
    "zipfile",
    # Where a package keeps its docstrings in submodules (members name those as __module__).
    "asyncio.base_events",
    "asyncio.events",
    "asyncio.locks",
    "asyncio.queues",
    "asyncio.streams",
    "asyncio.tasks",
    "asyncio.transports",
    "asyncio.protocols",
    "asyncio.runners",
    "concurrent.futures._base",
    "concurrent.futures.process",
    "multiprocessing.managers",
    "multiprocessing.connection",
    "email.parser",
    "email.header",
    "email.feedparser",
    "email.policy",
    "email._policybase",
    "email.headerregistry",
    "email.generator",
    "email.charset",
    "importlib.abc",
    "importlib.metadata",
    "sysconfig",
    "modulefinder",
    "codeop",
    "code",
    "compileall",
    "py_compile",
    "plistlib",
    "ssl",
    "xmlrpc.client",
    "xmlrpc.server",
    "xml.sax.handler",
    "xml.sax.saxutils",
    "xml.sax.xmlreader",
    "wsgiref.handlers",
    "wsgiref.simple_server",
    "wsgiref.headers",
    "urllib.robotparser",
    "unittest.loader",
    "unittest.result",
    "graphlib",
    "symtable",
    "tabnanny",
    "pickletools",
    "zipapp",
    "runpy",
    "linecache",
    "rlcompleter",
    "bdb",
    "cProfile",
    "ctypes",
    "pydoc",
    "sqlite3",
    "collections.abc",
    "_collections_abc",
    "_pydecimal",
    "_pyio",
    "json.decoder",
    "json.encoder",
    "logging.config",
)

_STDLIB = Path(sysconfig.get_paths()["stdlib"])
_MIN_WORDS = 6  # shorter paragraphs are signatures and one-line stubs ("Return self==value.")
_MIN_LETTER_SHARE = 0.7  # below this a paragraph is code, a table or an option list
_CODE_START = re.compile(r"^\s*(>>>|\.\.\.|\$ |[-=~*+|]{3,}|[{}\[\]#@])")


def default_cache_dir() -> Path:
    """Where the demo's SAE is cached: `saexplain.files.cache_dir("demo")`
    (`$SAEXPLAIN_CACHE_DIR/demo`, else `~/.cache/saexplain/demo`)."""
    return cache_dir("demo")


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    if any(_CODE_START.match(line) for line in lines):
        return False
    # Indented continuation lines mark literal blocks and definition lists.
    if any(line.startswith("    ") for line in lines[1:]) or paragraph.startswith(" "):
        return False
    text = " ".join(paragraph.split())
    if len(text.split()) < _MIN_WORDS or text.endswith(":"):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in text)
    return letters / len(text) >= _MIN_LETTER_SHARE


def _paragraphs(doc: str) -> list[str]:
    return [
        " ".join(p.split())
        for p in re.split(r"\n\s*\n", inspect.cleandoc(doc))
        if p.strip() and _is_prose(p)
    ]


def _public(name: str) -> bool:
    return not name.startswith("_")


def _source_docstrings(module_name: str) -> list[str]:
    """The docstrings in a module's source file, in source order: the module's, then each public
    class's followed by its public methods', and each public function's. Read with `ast` from the
    standard library's files, not from live objects, so libraries that patch the standard library
    at import time (transformers adds methods to `logging.Logger`) cannot change the corpus, and
    nothing is imported."""
    base = _STDLIB / module_name.replace(".", "/")
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not path.is_file():
        return []  # written in C (no source to read), or absent from this Python
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = [ast.get_docstring(tree, clean=False) or ""]
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and _public(node.name):
            docs.append(ast.get_docstring(node, clean=False) or "")
            docs.extend(
                ast.get_docstring(member, clean=False) or ""
                for member in node.body
                if isinstance(member, defs) and _public(member.name)
            )
        elif isinstance(node, defs) and _public(node.name):
            docs.append(ast.get_docstring(node, clean=False) or "")
    return docs


@cache
def _corpus() -> tuple[str, ...]:
    seen: set[str] = set()
    out: list[str] = []
    for module_name in DEMO_MODULES:
        for doc in _source_docstrings(module_name):
            kept = []
            for paragraph in _paragraphs(doc):
                if paragraph not in seen:  # inherited and copied docstrings repeat
                    seen.add(paragraph)
                    kept.append(paragraph)
            if kept:
                out.append("\n\n".join(kept))
    return tuple(out)


def demo_corpus(n_docs: int | None = None) -> list[str]:
    """Natural English text available offline: the prose of standard-library docstrings, one
    document per docstring (paragraphs separated by a blank line), deterministic, deduplicated,
    with no empty documents; about 150k SmolLM2 tokens in all. `n_docs` keeps the first ones."""
    docs = _corpus()
    if n_docs is not None:
        if n_docs < 0:
            raise ValueError(f"n_docs must be >= 0, got {n_docs}")
        docs = docs[:n_docs]
    return list(docs)
