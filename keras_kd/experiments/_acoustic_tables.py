"""The acoustic experiment's figures: the paper's ratios and its Tables 1 and 5.

Pure functions of the model records (name to record, as the run folder keeps
them), so they can be checked by hand. `keras_kd.experiments.acoustic` trains the
models and writes what these functions return.

Record names: `member-00`, `member-01`, ... (the ensemble's members; member 0 is
the baseline), `ensemble`, `distilled-T<T>`, `fraction-hard` and
`fraction-soft-T<T>`; further seeds of a model add `-s<repeat>` and carry
`repeat_of` (the first seed's name).
"""

from __future__ import annotations

from collections.abc import Mapping

from keras_kd import reports
from keras_kd.runs import seed_summary

# The paper's figures (speech, 2000 hours): Table 1 and Table 5.
PAPER_TABLE1 = {
    "baseline": ("58.9%", "10.9%"),
    "ensemble": ("61.1%", "10.7%"),
    "distilled": ("60.8%", "10.7%"),
}
PAPER_TABLE5 = {
    "baseline": ("63.4%", "58.9%"),
    "fraction-hard": ("67.3%", "44.5%"),
    "fraction-soft-": ("65.4%", "57.0%"),
}
SEED_MEAN_COLUMN = "Test / validation frame accuracy, mean over seeds"


def percent(value: float) -> str:
    """`0.684` as `"68.4%"`."""
    return f"{100.0 * value:.1f}%"


def with_seed_means(records: Mapping[str, Mapping]) -> dict[str, dict]:
    """A copy of `records` where each repeated model has the mean over its seeds.

    The first seed's record gains `seeds` (how many), `test_frame_accuracy_mean`,
    `validation_frame_accuracy_mean` and `wer_mean`; models without repeats get
    the same fields from their one seed.

    Args:
        records: Model name to record.

    Returns:
        A new dict (the records are copied, not changed).

    Example:

    >>> view = with_seed_means({
    ...     "a": {"test_frame_accuracy": 0.5},
    ...     "a-s1": {"test_frame_accuracy": 0.7, "repeat_of": "a"}})
    >>> view["a"]["seeds"], round(view["a"]["test_frame_accuracy_mean"], 2)
    (2, 0.6)
    """
    view = {name: dict(record) for name, record in records.items()}
    groups: dict[str, list[dict]] = {}
    for name, record in view.items():
        if "test_frame_accuracy" in record:
            groups.setdefault(record.get("repeat_of", name), []).append(record)
    for name, group in groups.items():
        if name not in view:
            continue
        first = view[name]
        first["seeds"] = len(group)
        for key in ("test_frame_accuracy", "validation_frame_accuracy", "wer"):
            values = [r[key] for r in group if key in r]
            if len(values) == len(group):
                first[f"{key}_mean"] = seed_summary(values).mean
    return view


def _ratio(numerator: float, denominator: float) -> float | None:
    """`numerator / denominator`, or `None` when the gap to close is not positive.

    A share of a gain (or of a gap) means nothing when there is no gain: an
    ensemble no better than its baseline would otherwise give large ratios of
    either sign, and a "met" verdict.
    """
    return numerator / denominator if denominator > 0 else None


def _members(records: Mapping[str, Mapping]) -> list[Mapping]:
    """The scored ensemble members (`member-00`, `member-01`, ...), in order."""
    return [
        records[name]
        for name in sorted(records)
        if name.startswith("member-") and "test_frame_accuracy" in records[name]
    ]


def _by_temperature(records: Mapping[str, Mapping], prefix: str) -> list[dict]:
    """The scored first-seed records whose name starts with `prefix`, by temperature."""
    chosen = [
        record
        for name, record in records.items()
        if name.startswith(prefix)
        and "test_frame_accuracy" in record
        and "repeat_of" not in record
    ]
    return sorted(chosen, key=lambda record: record["temperature"])


def _choose(candidates: list[dict]) -> str | None:
    """The temperature (as `"%g"`) with the best mean validation frame accuracy.

    Ties go to the lower temperature; `None` when no record has a validation
    score.
    """
    scored = [r for r in candidates if "validation_frame_accuracy_mean" in r]
    if not scored:
        return None
    best = max(
        scored, key=lambda r: (r["validation_frame_accuracy_mean"], -r["temperature"])
    )
    return f"{best['temperature']:g}"


def _members_summary(members: list[Mapping]) -> dict:
    test = seed_summary([m["test_frame_accuracy"] for m in members])
    summary = {
        "count": len(members),
        "test_frame_accuracy_mean": test.mean,
        "test_frame_accuracy_std": test.std,
        "wer_mean": seed_summary([m["wer"] for m in members if "wer" in m]).mean,
    }
    validation = [
        m["validation_frame_accuracy"]
        for m in members
        if "validation_frame_accuracy" in m
    ]
    if len(validation) == len(members):
        summary["validation_frame_accuracy_mean"] = seed_summary(validation).mean
    return summary


def _store_shares(
    summary: dict,
    chosen: dict,
    at_chosen: dict,
    part: str,
    key: str,
    candidates: list[dict],
    shares: Mapping[str, Mapping[str, float | None]],
) -> None:
    """Stores each `{T: ratio}` of `shares` as `summary[key + suffix]`, and,
    when validation chooses a temperature for `part`, it and the ratios there."""
    for suffix, values in shares.items():
        summary[key + suffix] = dict(values)
    t = _choose(candidates)
    if t is not None:
        chosen[part] = t
        for suffix, values in shares.items():
            at_chosen[key + suffix] = values[t]


def summarize(records: Mapping[str, Mapping]) -> dict:
    """The paper's two headline ratios from the model records.

    - gain recovered (Table 1): `(distilled - baseline) / (ensemble - baseline)`
      in test frame accuracy, for each temperature, with the baseline net
      (member 0) as the baseline, and with the mean test frame accuracy of the
      members (`..._vs_mean_member`, less sensitive to one seed);
    - gap closed (Table 5): `(soft - hard) / (baseline - hard)` in test frame
      accuracy, for the models trained on the fraction of the data, for each
      temperature of the soft targets (and again against the members' mean);
    - the temperature of each part chosen by validation frame accuracy
      (`chosen_temperature`) and the ratios at that temperature (`at_chosen`),
      the figures to hold against the targets: choosing by test accuracy would
      select on the test set.

    Repeated models count by their mean over seeds.

    Args:
        records: Model name to record.

    Returns:
        A dict with `ensemble_gain`, `gain_recovered`,
        `gain_recovered_vs_mean_member`, `gap_closed`, `gap_closed_vs_mean_member`
        (`{T: ratio}` each; `None` where the ensemble does not beat the
        baseline, or the baseline the hard-target fraction model), `members`
        (mean and standard deviation of the members' scores), `seeds`,
        `chosen_temperature` and `at_chosen` (only the parts that ran).

    Example:

    >>> summarize({"member-00": {"test_frame_accuracy": 0.6},
    ...            "ensemble": {"test_frame_accuracy": 0.64},
    ...            "distilled-T2": {"test_frame_accuracy": 0.63, "temperature": 2.0}}
    ...           )["gain_recovered"]["2"]  # doctest: +ELLIPSIS
    0.75...
    """
    records = with_seed_means(records)
    summary: dict = {}
    chosen: dict = {}
    at_chosen: dict = {}
    base = records.get("member-00", {}).get("test_frame_accuracy")
    members = _members(records)
    mean_member = None
    if len(members) > 1:
        summary["members"] = _members_summary(members)
        mean_member = summary["members"]["test_frame_accuracy_mean"]
    ensemble = records.get("ensemble", {}).get("test_frame_accuracy")
    if base is not None and ensemble is not None:
        summary["ensemble_gain"] = ensemble - base
        ordered = _by_temperature(records, "distilled-")
        distilled = {
            f"{r['temperature']:g}": r["test_frame_accuracy_mean"] for r in ordered
        }
        summary["seeds"] = {
            "distilled": {f"{r['temperature']:g}": r["seeds"] for r in ordered}
        }
        shares = {
            "": {t: _ratio(a - base, ensemble - base) for t, a in distilled.items()}
        }
        if mean_member is not None:
            shares["_vs_mean_member"] = {
                t: _ratio(a - mean_member, ensemble - mean_member)
                for t, a in distilled.items()
            }
        _store_shares(
            summary, chosen, at_chosen, "distilled", "gain_recovered", ordered, shares
        )
    hard = records.get("fraction-hard", {}).get("test_frame_accuracy_mean")
    ordered = _by_temperature(records, "fraction-soft-")
    soft = {f"{r['temperature']:g}": r["test_frame_accuracy_mean"] for r in ordered}
    if base is not None and hard is not None and soft:
        summary.setdefault("seeds", {})["fraction"] = {
            "hard": records["fraction-hard"]["seeds"],
            **{f"{r['temperature']:g}": r["seeds"] for r in ordered},
        }
        shares = {"": {t: _ratio(a - hard, base - hard) for t, a in soft.items()}}
        if mean_member is not None:
            shares["_vs_mean_member"] = {
                t: _ratio(a - hard, mean_member - hard) for t, a in soft.items()
            }
        _store_shares(
            summary, chosen, at_chosen, "fraction", "gap_closed", ordered, shares
        )
    if chosen:
        summary["chosen_temperature"] = chosen
        summary["at_chosen"] = at_chosen
    return summary


def _ratios(values: Mapping[str, float | None], chosen: str | None = None) -> str:
    return ", ".join(
        f"T={t}: {'n/a' if v is None else f'{100 * v:.0f}%'}"
        + (" (chosen)" if t == chosen else "")
        for t, v in values.items()
    )


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a (no positive gap to measure against)"
    if value >= target:
        return f"{100 * value:.0f}%, target >= {100 * target:.0f}% met"
    return (
        f"{100 * value:.0f}%, target >= {100 * target:.0f}% missed by "
        f"{100 * (target - value):.0f} points"
    )


class _Rows:
    """Row formatting shared by both tables (seed means, chosen marks)."""

    def __init__(self, records: dict, summary: Mapping):
        self.records = records
        self.chosen = summary.get("chosen_temperature", {})
        self.repeated = any(r.get("seeds", 1) > 1 for r in records.values())

    @staticmethod
    def validation(record: Mapping) -> str:
        value = record.get("validation_frame_accuracy")
        return "-" if value is None else percent(value)

    def with_mean(self, row: dict, record: Mapping | None, after: str) -> dict:
        """`row` with the seed-mean column after `after` (only when repeated)."""
        if not self.repeated:
            return row
        out = {}
        for key, value in row.items():
            out[key] = value
            if key == after:
                out[SEED_MEAN_COLUMN] = "-" if record is None else self._mean(record)
        return out

    @staticmethod
    def _mean(record: Mapping) -> str:
        validation = record.get("validation_frame_accuracy_mean")
        return (
            f"{percent(record['test_frame_accuracy_mean'])} / "
            f"{'-' if validation is None else percent(validation)} "
            f"({record['seeds']} seeds)"
        )

    def system(self, record: Mapping, part: str) -> str:
        temperature = record.get("temperature")
        if temperature is not None and self.chosen.get(part) == f"{temperature:g}":
            return f"{record['system']} [chosen on validation]"
        return record["system"]


def table1(records: Mapping[str, Mapping], summary: Mapping) -> tuple[list[dict], str]:
    """Rows and notes of the paper's Table 1 (frame accuracy and WER).

    Args:
        records: Model name to record.
        summary: The output of `summarize`.

    Returns:
        `(rows, notes)`: one dict per system, and Markdown lines under the table.
    """
    records = with_seed_means(records)
    rows = _Rows(records, summary)
    chosen = rows.chosen
    at_chosen = summary.get("at_chosen", {})
    members = summary.get("members")
    systems = []
    if "member-00" in records:
        systems.append(
            (
                "Baseline (member 0, one seed)",
                records["member-00"],
                PAPER_TABLE1["baseline"],
            )
        )
    if "ensemble" in records:
        ensemble = records["ensemble"]
        systems.append((ensemble["system"], ensemble, PAPER_TABLE1["ensemble"]))
    for record in _by_temperature(records, "distilled-"):
        systems.append(
            (rows.system(record, "distilled"), record, PAPER_TABLE1["distilled"])
        )
    table = [
        rows.with_mean(
            {
                "System": system,
                "Test frame accuracy": percent(r["test_frame_accuracy"]),
                "WER": percent(r["wer"]),
                "Validation frame accuracy": rows.validation(r),
                "Train frame accuracy": percent(r["train_frame_accuracy"]),
                "Paper (frame acc / WER)": " / ".join(paper),
            },
            r if "temperature" in r else None,
            "Validation frame accuracy",
        )
        for system, r, paper in systems
    ]
    if members and table:
        train = seed_summary([m["train_frame_accuracy"] for m in _members(records)])
        validation = members.get("validation_frame_accuracy_mean")
        table.insert(
            1,
            rows.with_mean(
                {
                    "System": (
                        f"Baseline, mean of {members['count']} seeds "
                        "(the ensemble's members)"
                    ),
                    "Test frame accuracy": (
                        f"{percent(members['test_frame_accuracy_mean'])} "
                        f"(sd {100 * members['test_frame_accuracy_std']:.1f})"
                    ),
                    "WER": percent(members["wer_mean"]),
                    "Validation frame accuracy": (
                        "-" if validation is None else percent(validation)
                    ),
                    "Train frame accuracy": percent(train.mean),
                    "Paper (frame acc / WER)": " / ".join(PAPER_TABLE1["baseline"]),
                },
                None,
                "Validation frame accuracy",
            ),
        )
    note = " (from the means over seeds)" if rows.repeated else ""
    test_note = "test, means over seeds" if rows.repeated else "test"
    lines = []
    if "distilled" in chosen:
        t = chosen["distilled"]
        text = (
            f"Temperature chosen by validation frame accuracy{note}: T={t}. Share "
            f"of the ensemble's test gain recovered at T={t}{note}: "
            f"{_verdict(at_chosen['gain_recovered'], 0.8)} against the baseline net "
            f"(member 0)"
        )
        if "gain_recovered_vs_mean_member" in at_chosen:
            text += (
                f"; {_verdict(at_chosen['gain_recovered_vs_mean_member'], 0.8)} "
                "against the mean of the members"
            )
        lines.append(text + " (paper: 86%).\n")
    if summary.get("gain_recovered"):
        lines.append(
            f"Ensemble gain over the baseline net: {100 * summary['ensemble_gain']:.2f} "
            f"points of test frame accuracy; share recovered at every temperature "
            f"({test_note}): "
            f"{_ratios(summary['gain_recovered'], chosen.get('distilled'))}.\n"
        )
    if summary.get("gain_recovered_vs_mean_member"):
        lines.append(
            "Measured from the mean test frame accuracy of the members "
            f"({percent(members['test_frame_accuracy_mean'])}) instead: "
            f"{_ratios(summary['gain_recovered_vs_mean_member'], chosen.get('distilled'))}.\n"
        )
    return table, "\n".join(lines)


def table5(records: Mapping[str, Mapping], summary: Mapping) -> tuple[list[dict], str]:
    """Rows and notes of the paper's Table 5 (soft targets as a regularizer).

    Args:
        records: Model name to record.
        summary: The output of `summarize`.

    Returns:
        `(rows, notes)`; no rows when the fraction part did not run.
    """
    records = with_seed_means(records)
    rows = _Rows(records, summary)
    chosen = rows.chosen
    at_chosen = summary.get("at_chosen", {})
    systems = []
    if "member-00" in records:
        systems.append(
            (
                "Baseline (100% of training set, member 0)",
                records["member-00"],
                PAPER_TABLE5["baseline"],
            )
        )
    hard = records.get("fraction-hard")
    if hard is not None and "test_frame_accuracy" in hard:
        systems.append((hard["system"], hard, PAPER_TABLE5["fraction-hard"]))
    for record in _by_temperature(records, "fraction-soft-"):
        systems.append(
            (rows.system(record, "fraction"), record, PAPER_TABLE5["fraction-soft-"])
        )
    if len(systems) < 2:
        return [], ""
    table = [
        rows.with_mean(
            {
                "System & training set": system,
                "Train frame accuracy (all training frames)": percent(
                    r["train_frame_accuracy"]
                ),
                "Train frame accuracy (own training frames)": percent(
                    r.get("own_train_frame_accuracy", r["train_frame_accuracy"])
                ),
                "Validation frame accuracy": rows.validation(r),
                "Test frame accuracy": percent(r["test_frame_accuracy"]),
                "Paper (train / test)": " / ".join(paper),
            },
            r if r is not records.get("member-00") else None,
            "Test frame accuracy",
        )
        for system, r, paper in systems
    ]
    note = " (from the means over seeds)" if rows.repeated else ""
    test_note = "test, means over seeds" if rows.repeated else "test"
    lines = []
    if "fraction" in chosen:
        t = chosen["fraction"]
        text = (
            f"Temperature chosen by validation frame accuracy{note}: T={t}. Share "
            f"of the test gap between the hard-target fraction model and the "
            f"full-data baseline closed at T={t}{note}: "
            f"{_verdict(at_chosen['gap_closed'], 0.7)} with the baseline net "
            "(member 0) as the full-data figure"
        )
        if "gap_closed_vs_mean_member" in at_chosen:
            text += (
                f"; {_verdict(at_chosen['gap_closed_vs_mean_member'], 0.7)} with the "
                "mean of the members"
            )
        lines.append(text + " (paper: 87%).\n")
    if "gap_closed" in summary:
        lines.append(
            f"Share of the gap closed at every temperature ({test_note}): "
            f"{_ratios(summary['gap_closed'], chosen.get('fraction'))}.\n"
        )
    if "gap_closed_vs_mean_member" in summary:
        lines.append(
            "With the members' mean as the full-data figure instead: "
            f"{_ratios(summary['gap_closed_vs_mean_member'], chosen.get('fraction'))}.\n"
        )
    return table, "\n".join(lines)


def format_tables(records: Mapping[str, Mapping], summary: Mapping) -> str:
    """Both tables as one Markdown text (what the experiment prints).

    Args:
        records: Model name to record.
        summary: The output of `summarize`.

    Returns:
        Markdown text.
    """
    rows, notes = table1(records, summary)
    text = (
        "Table 1 (frame classification, word error rate by summed frame "
        "log-probabilities)\n\n" + reports.markdown_table(rows) + notes
    )
    rows, notes = table5(records, summary)
    if rows:
        text += (
            "\n\nTable 5 (soft targets as a regularizer)\n\n"
            + reports.markdown_table(rows)
            + notes
        )
    return text
