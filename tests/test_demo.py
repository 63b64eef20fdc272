"""`keras-kd demo` end to end on a short schedule."""

from keras_kd import demo


def test_demo_trains_three_models_and_reports_them(capsys):
    rows = demo.run_demo(seed=0, epochs=3, verbose=0)
    assert [row["model"] for row in rows] == [
        "teacher",
        "student, hard labels",
        "student, distilled",
    ]
    # Three epochs on 1,257 digits already beat chance (10%) by far.
    assert all(row["test accuracy"] > 0.5 for row in rows)
    assert rows[1]["parameters"] == rows[2]["parameters"] < rows[0]["parameters"]
    printed = capsys.readouterr().out
    assert "| student, distilled |" in printed


def test_demo_command_passes_its_options(monkeypatch):
    from keras_kd import cli

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **options: seen.update(options))
    assert cli.main(["demo", "--epochs", "2", "--soft-weight", "0.5", "--seed", "3"]) == 0
    assert seen == {"seed": 3, "epochs": 2, "soft_weight": 0.5}
