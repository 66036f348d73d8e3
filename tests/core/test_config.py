"""Config composition: defaults < YAML < profile < dotted overrides, validated by field name."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import (
    apply_overrides,
    flatten,
    load_config,
    parse_override,
    save_resolved,
)
from viewcoop_core.config import ConfigError, ExperimentConfig

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_paper():
    cfg = ExperimentConfig()
    assert (cfg.model.name, cfg.model.image_size) == ("ViT-B-16", 256)
    assert (cfg.train.epochs, cfg.train.iters, cfg.train.batch_size, cfg.train.num_instances) == (
        50,
        600,
        64,
        4,
    )
    assert (cfg.cluster.eps, cfg.cluster.min_samples, cfg.cluster.k1, cfg.cluster.k2) == (
        0.6,
        4,
        30,
        6,
    )
    assert cfg.graph.tau == [1, 2]
    assert cfg.loss.terms == ["v", "t", "g", "cm"]
    assert (cfg.optim.step_size, cfg.optim.gamma) == (20, 0.1)


def test_parse_override_reads_yaml_values():
    assert parse_override("train.epochs=3") == ("train.epochs", 3)
    assert parse_override("graph.tau=[1, 2]") == ("graph.tau", [1, 2])
    assert parse_override("model.pretrained=null") == ("model.pretrained", None)
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override("train.epochs")


def test_precedence_file_profile_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "train": {"epochs": 10, "iters": 5},
                "profiles": {"smoke": {"train.epochs": 2, "model.name": "viewcoop-tiny"}},
                "sweep": {"graph.tau": ["0", "1or2"]},
            }
        )
    )
    assert load_config(path).train.epochs == 10
    smoke = load_config(path, profile="smoke")
    assert (smoke.train.epochs, smoke.model.name, smoke.train.iters) == (2, "viewcoop-tiny", 5)
    assert load_config(path, ["train.epochs=7"], profile="smoke").train.epochs == 7
    with pytest.raises(ConfigError, match="profile 'gpu'"):
        load_config(path, profile="gpu")


def test_profile_from_a_shared_file_beside_the_config(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "cpu.yaml").write_text(
        yaml.safe_dump({"train.epochs": 3, "data.synthetic.camera_looks": 1})
    )
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump({"train": {"epochs": 10}, "profiles": {"cpu": "profiles/cpu.yaml"}})
    )
    cfg = load_config(path, ["train.iters=4"], profile="cpu")
    assert (cfg.train.epochs, cfg.train.iters, cfg.data.synthetic.camera_looks) == (3, 4, 1)
    path.write_text(yaml.safe_dump({"profiles": {"cpu": "profiles/missing.yaml"}}))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(path, profile="cpu")


def test_a_profile_file_extends_another_and_a_loop_is_refused(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "base.yaml").write_text(yaml.safe_dump({"train.epochs": 3, "train.iters": 7}))
    (profiles / "wide.yaml").write_text(
        yaml.safe_dump({"extends": "base.yaml", "train.iters": 21, "cluster.k1": 30})
    )
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"wide": "profiles/wide.yaml"}}))
    cfg = load_config(path, profile="wide")
    assert (cfg.train.epochs, cfg.train.iters, cfg.cluster.k1) == (3, 21, 30)
    (profiles / "base.yaml").write_text(yaml.safe_dump({"extends": "wide.yaml"}))
    with pytest.raises(ConfigError, match="extend each other in a loop: .*wide.yaml"):
        load_config(path, profile="wide")
    (profiles / "wide.yaml").write_text(yaml.safe_dump({"extends": ["a.yaml", "b.yaml"]}))
    with pytest.raises(ConfigError, match="extends must name one profile file"):
        load_config(path, profile="wide")


def test_the_bench_small_profile_is_the_bench_profile_on_the_wider_clip_with_eq7_targets():
    for table in ("table1_modules", "table2_prompts", "table3_tau", "table4_patch"):
        bench = load_config(REPO / f"experiments/{table}.yaml", profile="bench")
        small = load_config(REPO / f"experiments/{table}.yaml", profile="bench-small")
        assert (small.model.name, small.train.iters, small.cluster.k1) == (
            "viewcoop-small",
            150,
            30,
        )
        assert (bench.loss.text_targets, small.loss.text_targets) == (
            "image_clusters",
            "text_clusters",
        )
        before = flatten(bench.to_dict())
        changed = {k for k, value in flatten(small.to_dict()).items() if before[k] != value}
        assert changed == {"model.name", "train.iters", "cluster.k1", "loss.text_targets"}


@pytest.mark.parametrize(
    "override, field",
    [
        ("prompt.variant=foo", "prompt.variant"),
        ("views.patch_size=12", "views.patch_size"),
        ("graph.tau=[3]", "graph.tau"),
        ("loss.terms=[x]", "loss.terms"),
        ("cluster.backend=faiss", "cluster.backend"),
        ("train.batch_size=30", "train.batch_size"),
        ("train.epoch=3", "train.epoch"),
        ("train.epochs=three", "train.epochs"),
        ("data.dataset=market", "data.dataset"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(overrides=[override])


def test_shipped_weights_are_refused_for_an_architecture_they_are_not_for():
    with pytest.raises(ConfigError, match=r"model\.name.*'viewcoop-tiny'.*pretrained='synthetic'"):
        load_config(overrides=["model.pretrained=synthetic"])  # model.name ViT-B-16
    for name in ("viewcoop-tiny", "viewcoop-small"):
        cfg = load_config(overrides=["model.pretrained=synthetic", f"model.name={name}"])
        assert cfg.model.name == name


def test_tau_and_patch_size_forms():
    assert load_config(overrides=["graph.tau=2"]).graph.tau == [2]
    assert load_config(overrides=["graph.tau='0'"]).graph.tau == [0]
    assert load_config(overrides=["views.patch_size=pixel"]).views.patch_pixels(256) is None
    assert load_config(overrides=["views.patch_size=32"]).views.patch_pixels(256) == 32


@pytest.mark.parametrize(("size", "pixels", "grid"), [(8, 8, 32), (16, 16, 16), (32, 32, 8)])
def test_the_two_readings_of_table_4_agree_only_at_16_on_256_px(size, pixels, grid):
    as_pixels = load_config(overrides=[f"views.patch_size={size}"]).views
    as_grid = load_config(overrides=[f"views.patch_size={size}", "views.patch_reading=grid"])
    assert as_pixels.patch_pixels(256) == pixels
    assert as_grid.views.patch_pixels(256) == grid
    assert as_grid.views.patch_pixels(128) == 128 // size


def test_a_grid_that_does_not_divide_the_input_is_named():
    views = load_config(overrides=["views.patch_size=32", "views.patch_reading=grid"]).views
    with pytest.raises(ConfigError, match="model.image_size must be a multiple"):
        views.patch_pixels(240)
    with pytest.raises(ConfigError, match="views.patch_reading"):
        load_config(overrides=["views.patch_reading=tiles"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["train.epochs=3", "graph.tau=[0]", "loss.terms=baseline"])
    path = save_resolved(cfg, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == cfg
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_flatten_and_apply_overrides_do_not_mutate():
    tree = {"a": {"b": 1}}
    assert apply_overrides(tree, {"a.c": 2}) == {"a": {"b": 1, "c": 2}}
    assert tree == {"a": {"b": 1}}
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}}) == {"a.b": 1, "a.c.d": [1, 2]}


@pytest.mark.parametrize(
    "path", sorted((REPO / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_loads(path):
    load_config(path)
    profiles = (yaml.safe_load(path.read_text()) or {}).get("profiles") or {}
    for profile in profiles:
        load_config(path, profile=profile)


def test_core_never_imports_ray():
    code = (
        "import sys, importlib, pkgutil, viewcoop_core\n"
        "for m in pkgutil.walk_packages(viewcoop_core.__path__, 'viewcoop_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'ray' not in sys.modules, [k for k in sys.modules if k.startswith('ray')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize(
    "override, field",
    [
        ("ray.num_workers=0", "ray.num_workers"),
        ("ray.num_workers=-3", "ray.num_workers"),
        ("ray.cpus_per_worker=0", "ray.cpus_per_worker"),
        ("ray.max_failures=-2", "ray.max_failures"),
        ("ray.actor_num_gpus=-1", "ray.actor_num_gpus"),
        ("ray.address=''", "ray.address"),
        ("model.image_size=0", "model.image_size"),
        ("model.image_size=-16", "model.image_size"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.max_skipped_fraction=1", "data.max_skipped_fraction"),
        ("data.root=''", "data.root"),
        ("train.extract_batch_size=0", "train.extract_batch_size"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.num_instances=0", "train.num_instances"),
        ("train.seed=-1", "train.seed"),
        ("train.figure_samples=0", "train.figure_samples"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("optim.prompt_lr=0", "optim.prompt_lr"),
        ("optim.weight_decay=-0.1", "optim.weight_decay"),
        ("optim.step_size=0", "optim.step_size"),
        ("optim.gamma=0", "optim.gamma"),
        ("loss.temperature=0", "loss.temperature"),
        ("loss.momentum=1.5", "loss.momentum"),
        ("loss.margin=-0.3", "loss.margin"),
        ("loss.graph_scope=everything", "loss.graph_scope"),
        ("loss.graph_weighting=nodes", "loss.graph_weighting"),
        ("loss.graph_positives=text", "loss.graph_positives"),
        ("tracking.experiment=''", "tracking.experiment"),
        ("name=a/b", "name"),
    ],
)
def test_impossible_settings_of_every_section_name_the_field(override, field):
    """Each was accepted before (num_instances=0 then crashed with ZeroDivisionError)."""
    with pytest.raises(ConfigError, match=r"(^|\W)" + re.escape(field) + "="):
        load_config(overrides=[override])


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: 3\n  iters: [1, 2\nmodel: {}\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4:6: invalid YAML"):
        load_config(path)
    profile = tmp_path / "profile.yaml"
    profile.write_text("train.epochs: 1\n\tbad: tab\n")
    path.write_text("profiles: {cpu: profile.yaml}\n")
    with pytest.raises(ConfigError, match=rf"^{profile}:2:1: invalid YAML"):
        load_config(path, profile="cpu")


def test_a_python_tag_is_refused_by_file_and_line_and_never_run(tmp_path):
    witness = tmp_path / "ran"
    path = tmp_path / "evil.yaml"
    path.write_text(f"train:\n  epochs: !!python/object/apply:os.system ['touch {witness}']\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2:11: .*python/object/apply:os.system"):
        load_config(path)
    assert not witness.exists()


def test_an_override_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match=r"override 'graph.tau=\[1': the value is not valid YAML"):
        load_config(overrides=["graph.tau=[1"])
