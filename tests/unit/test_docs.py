"""The README and docs/ are self-contained and agree with the code."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE = [*(REPO / "dynamo_cdc").rglob("*.py"), *(REPO / "dagster_project").rglob("*.py")]
# settings read through a helper that adds the DYNAMO_CDC_ prefix: _env("X"), number("X"), ...
PREFIXED = re.compile(r"\b(?:_env|number|_day)\(\s*\"([A-Z][A-Z0-9_]+)\"")


def settings_in_code() -> set[str]:
    names: set[str] = set()
    for path in CODE:
        text = path.read_text()
        names.update(re.findall(r"\bDYNAMO_CDC_[A-Z0-9_]*[A-Z0-9]\b", text))
        names.update(
            n if n.startswith("DYNAMO_CDC_") else f"DYNAMO_CDC_{n}"
            for n in PREFIXED.findall(text)
            if not n.startswith("AWS_") or path.name == "config.py"
        )
    return names


def test_every_setting_the_code_reads_is_in_the_readmes_settings_table():
    readme = (REPO / "README.md").read_text()
    table = readme.split("Settings (environment variables", 1)[1].split("\n\n", 2)[1]
    missing = sorted(n for n in settings_in_code() if f"`{n}`" not in table)
    assert missing == []
    assert "DYNAMO_CDC_PARTITIONS_START" in settings_in_code()  # the scan finds helper reads


def test_readme_and_docs_cite_no_file_outside_the_repository():
    for doc in DOCS:
        text = doc.read_text()
        # the shared design notes users never get
        assert not re.search(r"\b(DESIGN|FACTS|STYLE|LAYOUT)\b", text), doc.name
        for name in re.findall(r"[\w./-]+\.md\b", text):
            target = (doc.parent / name) if not name.startswith("docs/") else REPO / name
            assert target.exists() or (REPO / name).exists(), f"{doc.name} cites {name}"
        for link in re.findall(r"\]\(([^)#\s]+)", text):
            if not link.startswith("http"):
                assert (doc.parent / link).exists(), f"{doc.name} links {link}"


def test_the_design_page_exists_and_the_readme_points_at_it():
    assert "docs/design.md" in (REPO / "README.md").read_text()
    design = (REPO / "docs" / "design.md").read_text()
    for heading in ("## Architecture", "## Data contract", "## Invariants"):
        assert heading in design


def test_docs_agree_that_a_change_file_is_never_deleted_on_a_re_read():
    # the writer leaves out rows already landed (dynamo_cdc.changefiles.write_change_batch)
    for doc in DOCS:
        text = " ".join(doc.read_text().split())
        assert "overlaps are deleted" not in text, doc.name
        assert "whose range overlaps are deleted" not in text, doc.name
