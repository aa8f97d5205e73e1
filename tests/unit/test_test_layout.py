"""pytest imports test modules by basename (no packages under tests/): a unit and an e2e
module with the same name stop the whole run at collection."""

from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_unit_and_e2e_test_modules_have_distinct_names() -> None:
    unit = {path.name for path in (TESTS / "unit").glob("test_*.py")}
    e2e = {path.name for path in (TESTS / "e2e").glob("test_*.py")}
    assert not unit & e2e, f"rename one of each: {sorted(unit & e2e)}"
