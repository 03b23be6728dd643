"""The reference pages of the docs site are complete: every CLI command and option, every mesh-file
key and every environment variable the code reads is documented; the figures page shows the
committed benchmark results. The sets come from the code (the
click tree, the config parser, config.py's source), never from a list kept here; each check is a
function of a page's text, and a synthetic page with one item left out proves it can fail."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from regionmesh import config
from regionmesh.errors import ConfigError
from regionmesh.ops.cli import cli

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def _page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def _sections(page: str) -> list[tuple[str, str]]:
    """(heading text, body up to the next heading of any level), in page order."""
    out: list[tuple[str, str]] = []
    for line in page.splitlines():
        match = HEADING.match(line)
        if match:
            out.append((match.group(2), ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line + "\n")
    return out


def _mentions(text: str, word: str) -> bool:
    """``word`` written as a whole token (``--to`` is not found in ``--tolerance``)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# -- the CLI --------------------------------------------------------------------------------------
def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    """Every command path of the tree ('' for the root, 'dev up', ...) with its command."""
    yield " ".join(path), group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def long_flags(command: click.Command) -> list[str]:
    return [flag for param in command.params if isinstance(param, click.Option)
            for flag in (*param.opts, *param.secondary_opts) if flag.startswith("--")]


def missing_from_cli_page(page: str) -> list[str]:
    """Each command needs a heading naming it in backticks (`regionmesh dev up`); each of its long
    flags must appear in that heading's section, not merely somewhere on the page."""
    by_command: dict[str, str] = {}
    for heading, body in _sections(page):
        named = re.search(r"`regionmesh((?: [a-z][a-z-]*)*)`", heading)
        if named:
            by_command[named.group(1).strip()] = body
    missing = []
    for path, command in commands():
        label = f"regionmesh {path}".strip()
        if path not in by_command:
            missing.append(f"command {label}")
            continue
        missing += [f"option {label} {flag}" for flag in long_flags(command) if not _mentions(by_command[path], flag)]
    return missing


def synthetic_cli_page() -> str:
    """A page that documents everything, the way the real one is laid out."""
    parts = []
    for path, command in commands():
        parts.append(f"### `{f'regionmesh {path}'.strip()}`")
        parts += [f"- `{flag} X`: what it does." for flag in long_flags(command)]
    return "\n".join(parts) + "\n"


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    assert missing_from_cli_page(_page("cli.md")) == []


def test_the_synthetic_cli_page_is_complete() -> None:
    assert len(list(commands())) > 40
    assert missing_from_cli_page(synthetic_cli_page()) == []


@pytest.mark.parametrize(("drop", "reported"), [
    ("### `regionmesh dev up`\n", "command regionmesh dev up"),
    ("### `regionmesh tenants erase`\n", "command regionmesh tenants erase"),
    ("- `--no-metrics X`: what it does.\n", "option regionmesh dev up --no-metrics"),
    ("- `--even-if-reachable X`: what it does.\n", "option regionmesh failover --even-if-reachable"),
    ("- `--config X`: what it does.\n", "option regionmesh --config"),
])
def test_the_cli_check_fails_on_a_missing_command_or_option(drop: str, reported: str) -> None:
    page = synthetic_cli_page()
    assert drop in page
    assert reported in missing_from_cli_page(page.replace(drop, "", 1))


def test_an_option_documented_under_another_command_does_not_count() -> None:
    page = synthetic_cli_page().replace("- `--chaos X`: what it does.\n", "", 1)
    page += "### `regionmesh verify`\n- `--chaos X`: in the wrong place.\n"
    assert "option regionmesh demo --chaos" in missing_from_cli_page(page)


# -- the mesh file --------------------------------------------------------------------------------
def mesh_file_keys() -> dict[str, set[str]]:
    """The keys the parser accepts, per section, as config.py validates them; the sections as the
    parser names them when it refuses an unknown one."""
    try:
        config.parse_config("[bogus]\n", environ={})
    except ConfigError as exc:
        sections = re.findall(r"\[[^\]]+\]", exc.fix)
    else:
        raise AssertionError("the parser accepted an unknown section")
    assert sections == ["[mesh]", "[regions.<name>]", "[zones]"], sections
    # [zones] takes zone names (the operator's), not keys.
    return {"[mesh]": set(config._MESH_KEYS), "[regions.<name>]": set(config._REGION_KEYS), "[zones]": set()}


def missing_from_mesh_file_page(page: str) -> list[str]:
    """Each section needs a heading naming it in backticks; each key must be in that section."""
    by_section = {m.group(1): body for heading, body in _sections(page) if (m := re.search(r"`(\[[^`]+\])`", heading))}
    missing = []
    for section, keys in mesh_file_keys().items():
        if section not in by_section:
            missing.append(f"section {section}")
            continue
        missing += [f"key {section} {key}" for key in sorted(keys) if f"`{key}`" not in by_section[section]]
    return missing


def synthetic_mesh_file_page() -> str:
    return "".join(f"## `{section}`\n" + "".join(f"`{key}`\n: what it is.\n" for key in sorted(keys))
                   for section, keys in mesh_file_keys().items())


def test_the_parser_refuses_exactly_the_keys_outside_those_sets() -> None:
    """The sets the check reads are the ones the parser validates against."""
    for section, table in (("mesh", "[mesh]\nbogus = 1\n"),
                           ("regions.us-east", "[regions.us-east]\nbogus = 1\n")):
        with pytest.raises(ConfigError) as info:
            config.parse_config(table + "[regions.eu-west]\n", environ={})
        assert info.value.key == f"{section}.bogus"


def test_every_mesh_file_key_is_in_the_mesh_file_reference() -> None:
    assert missing_from_mesh_file_page(_page("mesh-file.md")) == []


@pytest.mark.parametrize(("drop", "reported"), [
    ("`replication_link_secrets`\n", "key [mesh] replication_link_secrets"),
    ("`ca_file`\n", "key [regions.<name>] ca_file"),
    ("## `[zones]`\n", "section [zones]"),
])
def test_the_mesh_file_check_fails_on_a_missing_key(drop: str, reported: str) -> None:
    page = synthetic_mesh_file_page()
    assert missing_from_mesh_file_page(page) == []
    assert reported in missing_from_mesh_file_page(page.replace(drop, "", 1))


def test_a_key_documented_in_the_wrong_section_does_not_count() -> None:
    page = synthetic_mesh_file_page().replace("`sslmode`\n: what it is.\n", "", 1)
    page = page.replace("## `[mesh]`\n", "## `[mesh]`\n`sslmode`\n: misplaced.\n", 1)
    assert missing_from_mesh_file_page(page) == ["key [regions.<name>] sslmode"]


# -- environment variables ------------------------------------------------------------------------
def config_variables() -> set[str]:
    """Every ``REGIONMESH_*`` name config.py reads: each string constant that is exactly such a name
    (docstrings mention example names inside prose, which do not match in full), and every knob."""
    tree = ast.parse(Path(config.__file__).read_text(encoding="utf-8"))
    found = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and re.fullmatch(r"REGIONMESH_[A-Z0-9_]+", node.value)}
    return found | {setting.env for setting in config.SETTINGS.values()}


def cli_variables() -> set[str]:
    """The variables CLI flags read through click."""
    out: set[str] = set()
    for _, command in commands():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            out.update([envvar] if isinstance(envvar, str) else list(envvar or ()))
    return out


def missing_variables(page: str, variables: set[str]) -> list[str]:
    return sorted(v for v in variables if f"`{v}`" not in page)


def test_every_variable_config_reads_is_in_the_settings_reference() -> None:
    names = config_variables()
    assert {"REGIONMESH_CONFIG", "REGIONMESH_REGION", "REGIONMESH_LEASE_S", "REGIONMESH_PG_BIN"} <= names
    assert "REGIONMESH_REPLICATION_PASSWORD" not in names  # an example in the docstring, not read
    assert missing_variables(_page("settings.md"), names) == []


def test_every_variable_a_cli_flag_reads_is_in_the_settings_reference() -> None:
    names = cli_variables()
    assert "REGIONMESH_DEV_WORKERS" in names
    assert missing_variables(_page("settings.md"), names) == []


@pytest.mark.parametrize("dropped", ["REGIONMESH_CLOCK_DRIFT", "REGIONMESH_FLOWER_AUTH", "REGIONMESH_CONFIG"])
def test_the_settings_check_fails_on_a_missing_variable(dropped: str) -> None:
    names = config_variables()
    page = "".join(f"`{v}`\n: what it does.\n" for v in sorted(names))
    assert missing_variables(page, names) == []
    assert missing_variables(page.replace(f"`{dropped}`\n", "", 1), names) == [dropped]


# -- the figures page -----------------------------------------------------------------------------
RESULTS = ROOT / "bench" / "results"
# (result file, path into it, how docs/results.md writes the number); a rerun that rewrites a file
# makes this fail until the page shows the new figure.
FIGURES: list[tuple[str, tuple[str, ...], str]] = [
    ("throughput.json", ("baseline", "raw", "tasks_per_s"), "{:.0f} tasks/s"),
    ("throughput.json", ("baseline", "canvas_chain", "tasks_per_s"), "{:.0f} tasks/s"),
    ("throughput.json", ("regionmesh", "one_step", "runs_per_s"), "{:.0f} runs/s"),
    ("throughput.json", ("regionmesh", "ten_step", "steps_per_s"), "{:.0f} steps/s"),
    ("throughput.json", ("regionmesh", "latency_ms_bench_1", "p50"), "p50 {:.1f} ms"),
    ("throughput.json", ("regionmesh", "latency_ms_bench_1", "p99"), "p99 {:.1f} ms"),
    ("throughput.json", ("ratios", "ten_step_steps_vs_raw"), "({:.0%})"),
    ("throughput.json", ("ratios", "lease_cost_one_step"), "**{:.1%}**"),
    ("throughput-everysec.json", ("baseline", "raw", "tasks_per_s"), "{:.0f} tasks/s"),
    ("throughput-everysec.json", ("regionmesh", "ten_step", "steps_per_s"), "{:.0f} steps/s"),
    ("resync.json", ("resync_s",), "**{:.1f} s**"),
    ("resync-wiped.json", ("resync_s",), "**{:.1f} s**"),
    ("fuzz.json", ("publish_s",), "in {:.1f} s"),
    ("fuzz.json", ("settle_s",), "{:.1f} s\nafter the first publish"),
    ("failover-cut.json", ("check_cost", "lease_check_overhead_us"), "{:.0f}\nµs"),
    ("zoned_lag.json", ("lag", "zoned run rows", "eu-central", "p99_ms"), "{:.1f} ms"),
]


def figure(file: str, path: tuple[str, ...], fmt: str) -> str:
    value = json.loads((RESULTS / file).read_text(encoding="utf-8"))
    for key in path:
        value = value[key]
    return fmt.format(value)


def missing_figures(page: str) -> list[str]:
    flat = re.sub(r"\s+", " ", page)
    return [f"{file} {'.'.join(path)}: {figure(file, path, fmt)!r}" for file, path, fmt in FIGURES
            if re.sub(r"\s+", " ", figure(file, path, fmt)) not in flat]


def test_the_figures_page_shows_the_committed_results() -> None:
    assert missing_figures((ROOT / "docs" / "results.md").read_text(encoding="utf-8")) == []


def test_the_figures_check_fails_on_a_stale_figure() -> None:
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    stale = page.replace(figure(*FIGURES[2]), "999 runs/s")
    assert missing_figures(stale) == [f"throughput.json regionmesh.one_step.runs_per_s: {figure(*FIGURES[2])!r}"]
