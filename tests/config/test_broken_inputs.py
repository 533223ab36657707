"""Every broken recipe or override: exit code 2, a message naming the place, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gym.cli.main import main
from llm_gym.config.validation_errors import origin_hint
from tests.conftest import REPO, run_cli

DEBUG_RECIPE = REPO / "recipes" / "gpt2-debug" / "v1.yaml"


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


def _edited(tmp_path: Path, old: str, new: str) -> str:
    text = DEBUG_RECIPE.read_text()
    assert old in text, f"test setup: {old!r} not in the debug recipe"
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


OVERRIDE_CASES = {
    # A list item is overridden by the path errors print (trainer.loggers[0].config...).
    "bad key inside a list item": (["trainer.loggers=[{type_hint: Console}]",
                                    "trainer.loggers[0].config.colour=1"],
                                   ["trainer.loggers[0].config.colour: unexpected key"]),
    "list item that is not there": (["trainer.loggers=[Console]", "trainer.loggers[4]=Curves"],
                                    ["no item trainer.loggers[4]"]),
    "item of a list the file lacks": (["trainer.loggers[0]=Curves"],
                                      ["trainer.loggers is not in the recipe file",
                                       "trainer.loggers=[...]"]),
    "item of what is not a list": (["model.config[0]=1"], ["model.config is not a list"]),
    "mapping key into a list": (["trainer.loggers=[Console]", "trainer.loggers.first=Console"],
                                ["trainer.loggers.first=Console", "a list is indexed as [1]"]),
    "unknown type_hint": (["optimizer.type_hint=AdamX"],
                          ["optimizer", "type_hint", "'AdamX'", "did you mean 'AdamW'"]),
    "type_hint of another kind": (["optimizer.type_hint=StepLR"],
                                  ["optimizer", "no optimizer named 'StepLR'", "SGD"]),
    "wrong type": (["trainer.max_steps=lots"], ["trainer.max_steps", "integer", "'lots'"]),
    "out of range": (["optimizer.config.lr=-0.1"], ["optimizer.config.lr", "greater than 0"]),
    "unexpected key": (["optimizer.config.lrr=0.1"],
                       ["optimizer.config.lrr: unexpected key; did you mean 'lr'?"]),
    "misspelt trainer key": (["trainer.max_step=5"],
                             ["trainer.max_step: unexpected key; did you mean 'max_steps'?"]),
    "misspelt key in a component config": (
        ["model.config.n_embdd=3"],
        ["model.config.n_embdd: unexpected key; did you mean 'n_embd'?"]),
    "misspelt key beside type_hint": (["optimizer.confg={lr: 1}"],
                                      ["optimizer.confg: unexpected key; did you mean 'config'?"]),
    "misspelt recipe metadata": (
        ["recipe.descripton=x"],
        ["recipe.descripton: unexpected key; did you mean 'description'?"]),
    "key unlike any valid one": (["optimizer.config.zzzz=1"],
                                 ["optimizer.config.zzzz: unexpected key; valid keys here: betas, "
                                  "eps, implementation, lr, weight_decay"]),
    "unknown top-level key": (["traner.max_steps=3"],
                              ["traner: unexpected key; did you mean 'trainer'?"]),
    "bad interpolation": (["model.config.n_embd=${trainer.width}"],
                          ["model.config.n_embd", "trainer.width"]),
    "missing environment variable": (["train_dataset.config.split=${oc.env:LLM_GYM_NO_SUCH}"],
                                     ["train_dataset.config.split", "LLM_GYM_NO_SUCH"]),
    "override without =": (["trainer.max_steps"], ["override", "KEY=VALUE"]),
    "cross-field check": (["model.config.n_head=3"],
                          ["model.config", "divisible by n_head"]),
    "literal choice": (["train_dataset.config.split=test"],
                       ["train_dataset.config.split", "'train' or 'val'"]),
    "unknown logger": (["trainer.loggers=[Consol]"],
                       ["trainer.loggers[0].type_hint", "did you mean 'Console'"]),
    "logger config": (["trainer.loggers=[{type_hint: Console, config: {nope: 1}}]"],
                      ["trainer.loggers[0].config.nope", "unexpected key"]),
    "a logger as a slot": (["logger=Console"], ["logger", "unexpected key"]),
    "bad list length": (["optimizer.type_hint=AdamW", "optimizer.config.betas=[0.9]"],
                        ["optimizer.config.betas", "too few items"]),
    "infinite learning rate": (["optimizer.config.lr=inf"],
                               ["optimizer.config.lr", "finite number"]),
    "YAML infinity": (["optimizer.config.lr=.inf"], ["optimizer.config.lr", "finite number"]),
    "nan learning rate": (["optimizer.config.lr=nan"], ["optimizer.config.lr", "finite number"]),
    "YAML nan in a list": (["optimizer.config.betas=[0.9, .nan]"],
                           ["optimizer.config.betas[1]", "finite number"]),
    "float overflow": (["optimizer.config.lr=1e400"], ["optimizer.config.lr", "finite number"]),
    "infinite trainer setting": (["trainer.grad_clip=-.inf"],
                                 ["trainer.grad_clip", "finite number"]),
    "infinite scheduler ratio": (["scheduler.type_hint=WarmupCosine", "scheduler.config="
                                  "{warmup_steps: 1, decay_steps: 8, min_lr_ratio: .nan}"],
                                 ["scheduler.config.min_lr_ratio", "finite number"]),
    # An entry that is neither a name nor a mapping: what a component entry may be.
    "a number for a component": (["model=42"], [
        "model: expected a model component: a name (GPT2, GPT2Pretrained, Llama, "
        "LlamaPretrained) or {type_hint: NAME, config: {...}}, got 42"]),
    "a null in a list of components": (["trainer.loggers=[Console, null]"], [
        "trainer.loggers[1]: expected a logger component: a name (Console, Curves, "
        "TensorBoard, WandB) or {type_hint: NAME, config: {...}}, got null"]),
    "a number as a nested component": (
        ["train_dataset=null", "train_dataset={type_hint: Mixture, config: {weights: [1, 1], "
         "sources: [DemoCorpus, 42]}}"],
        ["train_dataset.config.sources[1]: expected a dataset component: a name (DemoCorpus, "
         "Mixture, PackedTokens) or {type_hint: NAME, config: {...}}, got 42"]),
    # A near miss of a choice gets the closest one, as keys and component names do.
    "literal near miss": (["train_dataset.config.split=trian"],
                          ["train_dataset.config.split: input should be 'train' or 'val' "
                           "(got 'trian'); did you mean 'train'?"]),
    "trainer choice near miss": (["trainer.param_dtype=bf61"],
                                 ["trainer.param_dtype: ", "did you mean 'bf16'?"]),
    # A boolean is not a number (pydantic would read true as 1).
    "boolean for an int": (["trainer.seed=true"],
                           ["trainer.seed: input should be a number, not a boolean"]),
    "boolean for a float": (["optimizer.config.lr=true"],
                            ["optimizer.config.lr: input should be a number, not a boolean"]),
    "boolean in a tuple of floats": (["optimizer.config.betas=[true, 0.9]"],
                                     ["optimizer.config.betas[0]: input should be a number"]),
    "boolean for an optional int": (["trainer.eval_every=false"],
                                    ["trainer.eval_every: input should be a number, not a "
                                     "boolean"]),
    "override value not YAML": (["trainer.max_steps=["],
                                ["override 'trainer.max_steps=['", "not valid YAML", "quote it"]),
    "override value unclosed mapping": (["optimizer.config={lr: 1"],
                                        ["override 'optimizer.config={lr: 1'", "not valid YAML"]),
    "override alias bomb": ([
        "trainer.seed=[&a0 [1,1,1,1,1,1,1,1,1,1], "
        + ", ".join(f"&a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)) + "]"],
        ["override 'trainer.seed=", "expands to more than"]),
    "override interpolation bomb": (  # recipe.a9 alone: 10**10 characters
        ["recipe.a0=xxxxxxxxxx"]
        + [f"recipe.a{i}=\"{f'${{recipe.a{i - 1}}}' * 10}\"" for i in range(1, 10)],
        ["v1.yaml: recipe.a", "interpolations expand to more than 4,194,304 characters"]),
}


@pytest.mark.parametrize("case", sorted(OVERRIDE_CASES))
def test_broken_override(capsys, case):
    overrides, expected = OVERRIDE_CASES[case]
    code, output = _cli(capsys, "recipe", "validate", "gpt2-debug", *overrides)
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"
    assert "Traceback" not in output


FILE_CASES = {
    "missing required key": ("n_embd: 32, ", "", ["model.config.n_embd", "required"]),
    "missing required slot": ("loss:\n  type_hint: CrossEntropy\n", "",
                              ["loss", "required"]),
    "missing type_hint": ("  type_hint: AdamW\n", "", ["optimizer", "missing 'type_hint'"]),
    # gpt2-debug's model.config.n_positions is ${trainer.seq_len}: no note about it here.
    "missing model type_hint": ("  type_hint: GPT2\n", "", ["model: missing 'type_hint'"],
                                ["comes from"]),
    "yaml syntax error": ("  max_steps: 8\n", "  max_steps: [8\n", ["broken.yaml:", "YAML"]),
    "drifted pin": ("model/GPT2: {version: 1, fingerprint: ",
                    "model/GPT2: {version: 7, fingerprint: ",
                    ["model/GPT2", "version 7 -> 1", "recipe lock"]),
    "bad pin fingerprint": ("model/GPT2: {version: 1, fingerprint: ",
                            "model/GPT2: {version: 1, fingerprint: zz",
                            ["pins.model/GPT2.fingerprint"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_broken_recipe_file(capsys, tmp_path, case):
    old, new, expected, *absent = FILE_CASES[case]
    code, output = _cli(capsys, "recipe", "validate", _edited(tmp_path, old, new))
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"
    for fragment in ["Traceback", *(absent[0] if absent else [])]:
        assert fragment not in output, f"{fragment!r} in:\n{output}"


def test_drift_can_be_allowed_with_a_warning(capsys, tmp_path):
    path = _edited(tmp_path, "model/GPT2: {version: 1, fingerprint: ",
                   "model/GPT2: {version: 7, fingerprint: ")
    code, output = _cli(capsys, "recipe", "validate", path, "--allow-drift")
    assert code == 0 and "warning" in output and "model/GPT2" in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["recipe", "validate", "no/such/recipe.yaml"], ["recipe file not found",
                                                         "no/such/recipe.yaml"]),
        (["recipe", "show", "gpt2-tyni"], ["no recipe named 'gpt2-tyni'",
                                           "did you mean 'gpt2-tiny'"]),
        (["recipe", "validate", "gpt2-tiny@9"], ["gpt2-tiny", "no version 9", "version(s) 1"]),
        (["components", "show", "optimizer", "Adma"], ["did you mean 'AdamW'"]),
        (["recipe", "list", "--recipe-dir", "no/such/dir"], ["'--recipe-dir'",
                                                             "'no/such/dir' does not exist"]),
        (["components", "show", "optimiser", "AdamW"], ["no component kind named 'optimiser'",
                                                        "optimizer"]),
    ],
)
def test_broken_names(capsys, args, expected):
    code, output = _cli(capsys, *args)
    assert code == 2, output
    for fragment in expected:
        assert fragment in output


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "a recipe is a YAML mapping"), (b"- a\n- b\n", "a recipe is a YAML mapping"),
     (b"trainer:\n  max_steps: \xff\xfe\n", "cannot load"),
     (b"42\n", "not a number (42)"), (b"true\n", "not a boolean (true)"),
     (b"hello\n", "not a string ('hello')"), (b"3.5\n", "not a number (3.5)"),
     # Our bound says "nests deeper than"; newer PyYAML stops first ("maximum nesting depth").
     (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nest"),
     (b"a: &a [1, *a]\n", "recursive alias"),
     (b"a: 1\na: 2\n", "duplicate key")],
)
def test_unreadable_recipe_files(capsys, tmp_path, content, expected):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    code, output = _cli(capsys, "recipe", "validate", str(path))
    assert code == 2 and expected in output and "odd.yaml" in output
    assert "Traceback" not in output


def test_user_errors_exit_2_without_traceback_and_debug_shows_it():
    plain = run_cli("recipe", "validate", "gpt2-debug", "optimizer.config.lr=-1")
    assert plain.returncode == 2
    assert "optimizer.config.lr" in plain.stderr and "Traceback" not in plain.stderr
    debug = run_cli("--debug", "recipe", "validate", "gpt2-debug", "optimizer.config.lr=-1")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_schema_out_into_a_file_is_refused_by_name(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, output = _cli(capsys, "recipe", "schema", "--out", str(blocker / "schema.json"))
    assert code == 2 and f"--out {blocker}/schema.json: cannot write it" in output
    assert blocker.read_text() == "not a folder"
    written = tmp_path / "new" / "schema.json"
    code, output = _cli(capsys, "recipe", "schema", "--out", str(written))
    assert code == 0 and written.stat().st_size > 1000
    assert f"wrote the recipe JSON Schema to {written} ({written.stat().st_size:,} bytes)" in output


def test_a_value_from_an_interpolation_names_the_key_to_change(capsys):
    # gpt2-tiny's decay_steps is ${trainer.max_steps}: the user never wrote decay_steps.
    code, output = _cli(capsys, "recipe", "validate", "gpt2-tiny", "trainer.max_steps=20")
    assert code == 2 and "Traceback" not in output
    assert "decay_steps (20) must be greater than warmup_steps (50)" in output
    assert "e.g. scheduler.config.warmup_steps=2" in output
    assert "scheduler.config.decay_steps comes from ${trainer.max_steps}: change " \
           "trainer.max_steps" in output
    code, _ = _cli(capsys, "recipe", "validate", "gpt2-tiny", "trainer.max_steps=20",
                   "scheduler.config.warmup_steps=2")
    assert code == 0  # the value the message suggests works


def test_an_interpolated_leaf_names_its_source(capsys):
    code, output = _cli(capsys, "recipe", "validate", "gpt2-tiny", "tokenizer.config.corpus_mb=100")
    assert code == 2
    assert ("train_dataset.config.corpus_mb: input should be less than or equal to 64 (got 100);"
            " train_dataset.config.corpus_mb comes from ${tokenizer.config.corpus_mb}: change "
            "tokenizer.config.corpus_mb") in output


def test_numbers_as_strings_and_booleans_where_they_belong_still_validate(capsys):
    code, output = _cli(capsys, "recipe", "validate", "gpt2-debug", 'trainer.max_steps="8"',
                        'optimizer.config.lr="1e-3"', "trainer.compile=true",
                        "train_dataset.config.corpus_mb=1")
    assert code == 0, output


def test_an_item_of_an_interpolated_list_names_the_list_it_came_from(capsys):
    # gpt2-tiny-mix's eval weights are ${train_dataset.config.weights}.
    code, output = _cli(capsys, "recipe", "validate", "gpt2-tiny-mix",
                        "train_dataset.config.weights=[-1, 1]")
    assert code == 2 and "Traceback" not in output
    assert ("eval_dataset.config.weights[0]: input should be greater than 0 (got -1); "
            "eval_dataset.config.weights comes from ${train_dataset.config.weights}: change "
            "train_dataset.config.weights") in output


@pytest.mark.parametrize(("path", "interpolations", "expected"), [
    ("a.b[0]", {"a.b": "${x.y}"}, "; a.b comes from ${x.y}: change x.y"),
    ("a.b[0].c[2].d", {"a.b": "${x.y}"}, "; a.b comes from ${x.y}: change x.y"),
    # The nearest interpolated ancestor, not one further up.
    ("a.b[0].c", {"a": "${z}", "a.b": "${x.y}"}, "; a.b comes from ${x.y}: change x.y"),
    ("a.b", {"a.bc": "${x}"}, ""),  # a sibling whose name starts alike is no ancestor
    ("a.bc[1]", {"a.b": "${x}"}, ""),
])
def test_origin_hint_names_the_nearest_interpolated_ancestor(path, interpolations, expected):
    assert origin_hint(path, interpolations) == expected


def test_an_environment_interpolation_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("LLM_GYM_TEST_LR", "-1")
    code, output = _cli(capsys, "recipe", "validate", "gpt2-debug",
                        "optimizer.config.lr=${oc.env:LLM_GYM_TEST_LR}")
    assert code == 2
    assert "change the environment variable LLM_GYM_TEST_LR" in output


# The red team's second pass: (recipe, overrides, fragments the output has, fragments it
# must not have). Each is one line of what was wrong, at its full path, in the recipe's
# words: no Python reprs, no pydantic internals, no note about an unrelated interpolation.
RED_TEAM_CASES = {
    # A "comes from ${...}" note only where the wrong value itself came from one.
    "unknown model name": ("gpt2-tiny", ["model.type_hint=GPT3"],
                           ["model.type_hint: no model named 'GPT3'"], ["comes from"]),
    "model of another shape": ("gpt2-tiny", ["model.type_hint=Llama"],
                               ["model.config.n_positions: unexpected key",
                                "model.config.max_seq_len: required"], ["comes from"]),
    "misspelt nested type_hint": (
        "gpt2-tiny-mix", ["train_dataset.config.sources.1.type_hint=DemoCorpsu"],
        ["train_dataset.config.sources[1].type_hint: no dataset named 'DemoCorpsu'"],
        ["comes from"]),
    "whole-mapping check names its own values": (
        "gpt2-tiny", ["model.config.n_head=3"], ["model.config: n_embd (128) must be "
                                                 "divisible by n_head (3)"], ["comes from"]),
    # An override through an interpolated value would change the value it came from.
    "override through an interpolation": (
        "gpt2-tiny-mix", ["eval_dataset.config.weights.1=5"],
        ["eval_dataset.config.weights.1: eval_dataset.config.weights is "
         "${train_dataset.config.weights}; set the whole value (eval_dataset.config.weights="
         "[...]) or the source (train_dataset.config.weights.1=...)"], []),
    "override through an interpolation, indexed": (
        "gpt2-tiny-mix", ["eval_dataset.config.weights[1]=5"],
        ["the source (train_dataset.config.weights[1]=...)"], []),
    # Seeds every consumer takes (torch: unsigned 64 bits).
    "negative seed": ("gpt2-debug", ["trainer.seed=-1"],
                      ["trainer.seed: input should be greater than or equal to 0"], []),
    "seed past 64 bits": ("gpt2-debug", ["trainer.seed=18446744073709551616"],
                          ["trainer.seed: input should be less than or equal to "
                           "18446744073709551615"], []),
    # Values as YAML writes them, the recipe's words rather than pydantic's.
    "nested null and true": ("gpt2-debug", ["trainer.seed=[null,true]"],
                             ["(got [null, true])"], ["None", "True"]),
    "null type_hint": ("gpt2-debug", ["model.type_hint=null"],
                       ["model.type_hint: type_hint is null: name a model"], ["None"]),
    "settings given a number": ("gpt2-debug", ["trainer.parallel=5"],
                                ["trainer.parallel: expected a mapping of trainer.parallel "
                                 "settings (got 5)"], ["instance of", "ParallelSettings"]),
    "component config given a number": ("gpt2-debug", ["optimizer.config=5"],
                                        ["expected a mapping of optimizer.config settings"],
                                        ["instance of", "Config"]),
    "validator message": ("gpt2-debug", ["trainer.loggers=[Console,console]"],
                          ["trainer.loggers: Console is listed twice"], ["alue error"]),
    "article": ("gpt2-debug", ["trainer.evaluators=[5]"],
                ["expected an evaluator component"], []),
    # A setting beside type_hint belongs under config.
    "setting beside type_hint": (
        "gpt2-debug", ["tokenizer={type_hint: HFJson, path: /x/tok.json}"],
        ["tokenizer.config.path: required, but missing",
         "tokenizer.path: unexpected key here; it is a setting of HFJson: "
         "tokenizer.config.path"], ["tokenizer.path: required", "valid keys here"]),
    # Interpolation problems at the key holding them, with what to do.
    "misspelt interpolation key": ("gpt2-debug", ["model.config.n_positions=${trainer.seq_lenn}"],
                                   ["model.config.n_positions: ${trainer.seq_lenn} refers to "
                                    "trainer.seq_lenn, which is not in the recipe; did you "
                                    "mean 'trainer.seq_len'?"], ["Interpolation key"]),
    "unset variable without a default": (
        "gpt2-debug", ["trainer.seed=${oc.env:LLM_GYM_NO_SUCH}"],
        ["trainer.seed: ${oc.env:LLM_GYM_NO_SUCH} reads the environment variable "
         "LLM_GYM_NO_SUCH, which is not set: set it, or give a default: "
         "${oc.env:LLM_GYM_NO_SUCH,default}"], ["KeyError"]),
    "unset variable's default": (
        "gpt2-debug", ["trainer.seed=${oc.env:LLM_GYM_NO_SUCH,x}"],
        ["LLM_GYM_NO_SUCH is not set, so its default x is used"],
        ["change the environment variable"]),
    "interpolation into null": ("gpt2-debug", ["trainer=null"],
                                ["model.config.n_positions: ${trainer.seq_len} refers to "
                                 "trainer.seq_len, but trainer is null, not a mapping"],
                                ["ConfigTypeError"]),
    "a list for a component": ("gpt2-debug", ["model=[GPT2]"],
                               ["model: expected a model component: a name"],
                               ["Cannot merge"]),
    # A union's members: one line, from the member that takes the given type.
    "union near miss": ("gpt2-debug", ["trainer.activation_checkpointing=ful"],
                        ["trainer.activation_checkpointing: input should be 'none' or 'full' "
                         "(got 'ful'); did you mean 'full'?\n"], ["integer"]),
    "union of no member's type": ("gpt2-debug", ["trainer.activation_checkpointing=[1]"],
                                  ["trainer.activation_checkpointing: input should be 'none' "
                                   "or 'full', or a valid integer (got [1])"], []),
}


@pytest.mark.parametrize("case", sorted(RED_TEAM_CASES))
def test_each_problem_is_one_clear_line(capsys, case):
    recipe, overrides, expected, absent = RED_TEAM_CASES[case]
    code, output = _cli(capsys, "recipe", "validate", recipe, *overrides)
    assert code == 2, output
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"
    for fragment in ["Traceback", *absent]:
        assert fragment not in output, f"{fragment!r} in:\n{output}"
    if "union" in case:
        assert output.count("trainer.activation_checkpointing:") == 1, output


def test_an_override_through_an_interpolation_changes_nothing_else(capsys):
    code, output = _cli(capsys, "recipe", "show", "gpt2-tiny-mix",
                        "eval_dataset.config.weights.1=5")
    assert code == 2 and "weights:" not in output
    # The whole value, or its source, is how to change it.
    code, output = _cli(capsys, "recipe", "show", "gpt2-tiny-mix",
                        "eval_dataset.config.weights=[3, 5]")
    assert code == 0 and output.count("- 5.0") == 1, output


def test_the_largest_seed_torch_takes_validates(capsys):
    code, output = _cli(capsys, "recipe", "validate", "gpt2-debug",
                        "trainer.seed=18446744073709551615")
    assert code == 0, output
