"""Each step option is said once (svcluster.tasks.options): the step's command, `svcluster run`,
the Prefect flow parameters and the deployments all come from the options dataclass."""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from svcluster.flows.cli import app, _register_commands
from svcluster.flows.options import flow_params, with_options
from svcluster.flows.params import ClusterParams, EmbedParams, FetchParams
from svcluster.tasks.cluster.step import ClusterOptions
from svcluster.tasks.embed.step import EmbedOptions
from svcluster.tasks.errors import SvclusterError
from svcluster.tasks.fetch.step import FetchOptions
from svcluster.tasks.options import default_of, option, options_of
from svcluster.tasks.embed.models import DEFAULT_MODEL

STEPS = [("fetch", FetchOptions, FetchParams), ("embed", EmbedOptions, EmbedParams), ("cluster", ClusterOptions, ClusterParams)]
RUN_FLAGS = {opt.flag for _, cls, _ in STEPS for _, opt in options_of(cls) if opt.flow and opt.run}
FLOW_ONLY = {"FetchParams": {"batch_locations", "concurrency_limit"}, "EmbedParams": {"batch_locations"}, "ClusterParams": {"report"}}


def help_of(*argv: str) -> str:
    _register_commands()
    result = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output)


@pytest.mark.parametrize("command,options,params", STEPS)
def test_the_command_and_run_show_each_option_with_its_default(command, options, params):
    step_help, run_help = help_of(command), help_of("run")
    for f, opt in options_of(options):
        if opt.flag is None:
            continue
        default = default_of(f) if opt.shown is None else opt.shown(default_of(f))
        if opt.cli:
            assert f"{opt.flag} " in step_help, opt.flag
            if default not in (None, False):
                assert re.search(re.escape(opt.flag) + r" <\w+> .*?\[default: " + re.escape(str(default)) + r"\]", step_help), opt.flag
        in_run = opt.flow and opt.run
        if not in_run and opt.flag in RUN_FLAGS:
            continue  # run has this flag from another step (e.g. fetch's --size, embed's --model)
        assert (f"{opt.flag} " in run_help) == in_run, opt.flag
        if in_run:
            assert f"{command.capitalize()}: {opt.help.split('(')[0].strip()}"[:40] in run_help, opt.flag


@pytest.mark.parametrize("command,options,params", STEPS)
def test_flow_parameters_are_the_flow_options_with_the_same_defaults(command, options, params):
    flow_fields = {f.name: f for f, opt in options_of(options) if opt.flow}
    assert set(params.model_fields) == set(flow_fields) | FLOW_ONLY[params.__name__]
    built = params()
    for name, f in flow_fields.items():
        default = default_of(f)
        assert getattr(built, name) == (list(default) if isinstance(default, tuple) else default), name
        assert params.model_fields[name].description == dict((g.name, o) for g, o in options_of(options))[name].help
    assert params.from_options(built.to_options()) == built


def test_one_default_model():
    assert EmbedOptions().model == EmbedParams().model == DEFAULT_MODEL
    assert f"[default: {DEFAULT_MODEL}]" in help_of("embed") and f"[default: {DEFAULT_MODEL}]" in help_of("run")


def test_a_deployment_typo_is_refused():
    with pytest.raises(ValueError, match="sizes"):
        FetchParams(sizes="320x320")


def test_a_new_option_is_one_field(tmp_path):
    """An options dataclass with a new field: the command gets the flag, the flow the parameter."""

    @dataclasses.dataclass(frozen=True)
    class Demo:
        width: int = option(3, "--width", "How wide.")
        secret_sauce: str = option("a", "--sauce", "Command only.", flow=False)
        tags: tuple[str, ...] = option(("x",), "--tags", "Comma-separated.", text=str,
                                       parse=lambda t: {"tags": tuple(t.split(","))}, shown=",".join)  # fmt: skip

        def checked(self):
            if self.width < 1:
                raise SvclusterError("--width must be at least 1")
            return self

    got = []
    cli = typer.Typer()

    @cli.command()
    @with_options(options=Demo)
    def go(name: Annotated[str, typer.Option("--name")] = "n", *, options: Demo) -> None:
        got.append((name, options))

    runner = CliRunner()
    assert runner.invoke(cli, ["--width", "7", "--tags", "p,q"]).exit_code == 0
    assert got == [("n", Demo(width=7, secret_sauce="a", tags=("p", "q")))]
    bad = runner.invoke(cli, ["--width", "0"])
    assert bad.exit_code != 0 and isinstance(bad.exception, SvclusterError)
    params = flow_params(Demo, "DemoParams", "demo")
    assert set(params.model_fields) == {"width", "tags"} and params().to_options() == Demo()


def test_two_steps_with_one_option_name_fail_when_the_command_is_made():
    @dataclasses.dataclass
    class A:
        seed: int = option(1, "--seed", "a")

        def checked(self):
            return self

    with pytest.raises(TypeError, match="seed"):
        with_options("run", a=A, b=A)(lambda *, a, b: None)
