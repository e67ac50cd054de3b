"""
Sphinx configuration of the documentation site: ``make docs`` builds docs/ into build/docs.

The pages are the Markdown files in docs/ (MyST), written so that they read the same on GitHub:
their links are relative paths to files. Links within docs/ are MyST's own; a link to a file
outside docs/ is resolved here, as GitHub resolves it (see ``link_repository_files``).
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sphinx import addnodes

from airflow_provider_scriptrunner import PACKAGE_NAME, __version__

if TYPE_CHECKING:
    from docutils import nodes
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

# Autodoc imports Airflow, whose configuration logs at INFO as it loads: no news for a docs build.
logging.getLogger("airflow").setLevel(logging.WARNING)

DOCS = Path(__file__).resolve().parent
REPOSITORY = DOCS.parent
#: Repository files that are pages of the site, by the page that includes them: a link to the
#: file leads to the page.
PAGES_OF_FILES = {"README.md": "overview", "CHANGELOG.md": "changelog"}

project = PACKAGE_NAME
release = version = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}

# GitHub's anchors for every heading, so that a `page.md#a-heading` link works here too.
myst_heading_anchors = 6

autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
# The provider's own words only: Airflow's docstrings are written for Airflow's documentation.
autodoc_inherit_docstrings = False

html_theme = "furo"
html_title = f"{PACKAGE_NAME} {release}"
html_show_sourcelink = False
html_show_copyright = False  # no holder to name: the pages link LICENSE


def link_repository_files(app: Sphinx, doctree: nodes.document) -> None:
    """
    Resolve a link to a file outside docs/ relative to the file it is written in, as GitHub does.

    README.md and CHANGELOG.md lead to their pages (``PAGES_OF_FILES``); a page of docs/ linked
    from the README (``docs/operators.md``) to that page; any other file (LICENSE,
    benchmarks/RESULTS.md) is offered as a download. A link whose target does not exist is left
    to MyST, which warns.
    """
    env = app.env
    page_dir = Path(env.doc2path(env.docname)).parent
    links = [*doctree.findall(addnodes.pending_xref), *doctree.findall(addnodes.download_reference)]
    for node in links:
        if node.get("reftype") != "myst":
            continue
        if node.get("refdomain") == "doc":
            if node["reftarget"] in env.found_docs:
                continue
            # A Markdown file outside docs/, named by its path without the suffix.
            path, anchor = Path(env.srcdir, node["reftarget"] + ".md"), node["reftargetid"]
        else:
            target, _, anchor = node["reftarget"].partition("#")
            path = Path(node.source).parent / target if node.source else page_dir / target
        path = path.resolve()
        if not path.is_file() or not path.is_relative_to(REPOSITORY):
            continue
        docname = PAGES_OF_FILES.get(path.relative_to(REPOSITORY).as_posix()) or env.path2doc(str(path))
        common = {"reftype": "myst", "refdoc": env.docname, "refexplicit": node["refexplicit"]}
        if docname in env.found_docs:
            new: nodes.Element = addnodes.pending_xref(
                "", refdomain="doc", reftarget=docname, reftargetid=anchor or None, **common
            )
        else:
            new = addnodes.download_reference(
                "", refdomain=None, reftarget=os.path.relpath(path, page_dir), **common
            )
        new.source, new.line = node.source, node.line
        new.extend(node.children)
        node.replace_self(new)


def resolve_outside_reference(
    app: Sphinx, env: BuildEnvironment, node: addnodes.pending_xref, contnode: nodes.TextElement
) -> nodes.Node | None:
    """
    Under ``-n`` (nitpicky), a Python reference that names an object outside this reference stays
    plain text, and one that names no object at all fails the build.

    Outside this reference: the package's internal modules, Airflow, the standard library and
    other libraries (no inventories are fetched). Types in signatures stay plain text whatever
    they name: mypy checks them, and names imported only for type checking cannot be looked up.
    """
    if node.get("refdomain") != "py":
        return None
    parent = node.parent
    while parent is not None:
        if isinstance(parent, addnodes.desc_signature):
            return contnode
        parent = parent.parent
    return contnode if _object_exists(node) else None


def _object_exists(node: addnodes.pending_xref) -> bool:
    target = node["reftarget"].lstrip(".~")
    module, cls = node.get("py:module"), node.get("py:class")
    # The class, its module and the packages above it (relative references), then the target alone.
    scopes: list[str | None] = [f"{module}.{cls}"] if module and cls else []
    while module:
        scopes.append(module)
        module = module.rpartition(".")[0]
    for scope in [*scopes, None]:
        parts = (f"{scope}.{target}" if scope else target).split(".")
        for split in range(len(parts), 0, -1):
            try:
                found: object = importlib.import_module(".".join(parts[:split]))
            except ImportError:
                continue
            try:
                for name in parts[split:]:
                    found = getattr(found, name)
            except AttributeError:
                break
            return True
    return False


def readable_dataclass_defaults(
    app: Sphinx, what: str, name: str, obj: object, options: object, signature: str | None, annotation: str
) -> tuple[str | None, str]:
    """
    Show a dataclass field's ``default_factory`` as ``...`` instead of ``<factory>``, which is not
    Python and makes Sphinx give up parsing the whole signature.
    """
    return (signature.replace("<factory>", "...") if signature else signature), annotation


def setup(app: Sphinx) -> None:
    # Before Sphinx's own collectors (priority 500), which note the downloads.
    app.connect("doctree-read", link_repository_files, priority=400)
    app.connect("missing-reference", resolve_outside_reference)
    app.connect("autodoc-process-signature", readable_dataclass_defaults)
