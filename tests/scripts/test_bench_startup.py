"""bench_startup's comparison: this build's figures over the base's, each against its target."""

import bench_startup

COLD = "cold (fresh SHIV_ROOT)"


def rows(this: dict, base: dict) -> list[dict]:
    """Median rows of two builds, from {(measure, state): median}."""
    return [{"build": build, "measure": measure, "state": state, "median": median}
            for build, figures in (("this", this), ("base", base)) for (measure, state), median in figures.items()]


FIGURES = {("pyz size", ""): 6.0, ("--help", COLD): 0.5, ("--help", "warm"): 0.1,
           ("serve ready", COLD): 1.0, ("serve ready", "warm"): 0.2}


def by_measure(ratios: list[dict]) -> dict:
    return {(row["build"], row["measure"], row["state"]): row for row in ratios}


def test_each_figure_is_divided_by_the_bases():
    base = {key: value * 2 for key, value in FIGURES.items()}

    ratios = by_measure(bench_startup.ratio_rows(rows(FIGURES, base), "this", "base"))

    assert {key: row["median"] for key, row in ratios.items() if key[0] == "this / base"} == {
        ("this / base", measure, state): 0.5 for measure, state in FIGURES
    }


def test_cold_starts_must_be_at_most_035_of_the_bases_and_warm_ones_no_worse():
    base = {**FIGURES, ("--help", COLD): 1.0, ("serve ready", COLD): 10.0, ("serve ready", "warm"): 0.19}

    ratios = by_measure(bench_startup.ratio_rows(rows(FIGURES, base), "this", "base"))

    assert ratios[("this / base", "--help", COLD)]["met"] is False  # 0.5
    assert ratios[("this / base", "serve ready", COLD)]["met"] is True  # 0.1
    assert ratios[("this / base", "--help", "warm")]["met"] is True  # 1.0
    assert ratios[("this / base", "serve ready", "warm")]["met"] is False  # 1.05


def test_the_pyz_must_be_at_most_8_mib():
    heavy = {**FIGURES, ("pyz size", ""): 8.5}

    assert by_measure(bench_startup.ratio_rows(rows(FIGURES, FIGURES), "this", "base"))[
        ("this", "pyz size", "")]["met"] is True
    assert by_measure(bench_startup.ratio_rows(rows(heavy, FIGURES), "this", "base"))[
        ("this", "pyz size", "")]["met"] is False
