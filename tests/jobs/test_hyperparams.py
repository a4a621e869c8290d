"""Hyperparameter resolution: auto rules and range errors naming the field."""

import pytest

from jobs.hyperparams import (
    HyperparameterError,
    base_learning_rate,
    count_parameters_from_config,
    resolve_hyperparameters,
    total_steps,
)


def resolve(requested=None, algorithm="grpo", rows=40):
    return resolve_hyperparameters("reinforcement", algorithm, requested or {}, rows, None)


def test_auto_rules_for_a_few_dozen_rows():
    hp = resolve()
    assert hp["batch_size"] == 5 and hp["n_epochs"] == 8
    assert total_steps(hp, 40) == 64 and hp["eval_interval"] == 6
    assert hp["num_generations"] == 8 and hp["kl_coef"] == 0.04 and hp["loss_type"] == "dapo"
    assert hp["eval_samples"] is None and hp["lora"] is None and hp["max_wall_seconds"] is None
    assert "auto" not in hp.values()


def test_compute_multiplier_scales_generations():
    assert resolve({"compute_multiplier": 2})["num_generations"] == 16
    assert resolve({"compute_multiplier": 0.1})["num_generations"] == 2
    assert resolve({"num_generations": 4, "compute_multiplier": 1.5})["num_generations"] == 6


def test_explicit_values_kept_and_auto_strings_accepted():
    hp = resolve({"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 2, "loss_type": "gspo",
                  "reasoning_effort": "high", "max_wall_seconds": 300})
    assert hp["n_epochs"] == 3 and hp["learning_rate_multiplier"] == 2.0 and hp["loss_type"] == "gspo"
    assert hp["reasoning_effort"] == "high" and hp["max_wall_seconds"] == 300.0


def test_lora_defaults():
    assert resolve({"lora": {"rank": 4}})["lora"] == {"rank": 4, "alpha": 8.0, "target_modules": "all-linear"}
    assert resolve({"lora": {"target_modules": ["q_proj"]}})["lora"]["target_modules"] == ["q_proj"]


def test_rloo_has_no_loss_type():
    assert resolve(algorithm="rloo")["loss_type"] is None
    with pytest.raises(HyperparameterError) as exc:
        resolve({"loss_type": "dapo"}, algorithm="rloo")
    assert exc.value.param.endswith(".loss_type")


@pytest.mark.parametrize("field,value", [
    ("n_epochs", 0), ("n_epochs", 2.5), ("n_epochs", True), ("batch_size", 41), ("batch_size", "8"),
    ("learning_rate_multiplier", 0), ("learning_rate_multiplier", -1), ("eval_interval", 0),
    ("eval_samples", 0), ("compute_multiplier", 0), ("num_generations", 1), ("kl_coef", -0.1),
    ("max_completion_tokens", 0), ("temperature", 0), ("temperature", 3), ("loss_type", "ppo"),
    ("reasoning_effort", "max"), ("max_wall_seconds", 0), ("lora", "yes"), ("no_such_param", 1),
])
def test_out_of_range_names_the_field(field, value):
    with pytest.raises(HyperparameterError) as exc:
        resolve({field: value})
    assert exc.value.param == f"method.reinforcement.hyperparameters.{field}"
    assert isinstance(exc.value, ValueError)


def test_lora_field_errors():
    with pytest.raises(HyperparameterError) as exc:
        resolve({"lora": {"rank": 0}})
    assert exc.value.param.endswith("lora.rank")
    with pytest.raises(HyperparameterError) as exc:
        resolve({"lora": {"dropout": 0.1}})
    assert exc.value.param.endswith("lora.dropout")


def test_method_and_algorithm_errors():
    with pytest.raises(HyperparameterError) as exc:
        resolve_hyperparameters("supervised", "grpo", {}, 10, None)
    assert exc.value.param == "method.type"
    with pytest.raises(HyperparameterError) as exc:
        resolve_hyperparameters("reinforcement", "ppo", {}, 10, None)
    assert exc.value.param == "method.reinforcement.algorithm"


def test_base_learning_rate_rule():
    assert base_learning_rate(7_000_000_000, lora=False) == 1e-6
    assert base_learning_rate(7_000_000_000, lora=True) == pytest.approx(1e-5)
    assert base_learning_rate(1000, lora=False) == 3e-5


def test_count_parameters_from_config(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    exact = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    approx = count_parameters_from_config(tiny_model_dir)
    assert abs(approx - exact) / exact < 0.05
    assert count_parameters_from_config(tmp_path) is None
