"""`saexplain report RUN` rebuilds the HTML report; `saexplain show RUN` prints its path and,
with --open, opens it."""

import webbrowser

from saexplain.cli import main


def test_report_rebuilds_the_report_folder(run_dir, capsys):
    index = run_dir / "report" / "index.html"
    assert not index.exists()
    assert main(["report", str(run_dir)]) == 0
    assert index.is_file() and (run_dir / "report.html").is_file()
    assert (run_dir / "summary.json").is_file()
    assert f"report: {index}" in capsys.readouterr().out


def test_show_prints_the_report_path_and_opens_it(run_dir, capsys, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    assert main(["show", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "no report yet: `saexplain report" in out and opened == []
    assert main(["show", str(run_dir), "--open"]) == 0  # writes it first, then opens it
    index = run_dir / "report" / "index.html"
    assert index.is_file() and opened == [index.resolve().as_uri()]
    assert f"report: {index}" in capsys.readouterr().out


def test_report_of_a_missing_directory_fails_in_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err
    assert "is not a run directory" in err and len(err.strip().splitlines()) == 1
