"""Getting models into images: staging into handler folders, faas-cli's build context, and the bake step."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from aigc import buildctx, stack
from aigc.models import stage
from aigc.runtime import bake, errors, store

from conftest import REPO


def make_entry(root: Path, name: str, content: bytes = b"weights") -> Path:
    entry = root / name
    entry.mkdir(parents=True)
    (entry / "model.bin").write_bytes(content)
    store.write_manifest(entry, {"name": name, "task": "test"})
    return entry


def one_function_stack(tmp_path: Path, models: str, copy: list[str] = ()) -> stack.Stack:
    handler = tmp_path / "fn"
    handler.mkdir(exist_ok=True)
    (handler / "handler.py").write_text("def handle(event, context):\n    return 'ok'\n")
    fn = stack.StackFunction(name="fn", lang="aigc-onnx", handler=handler, image="localhost/fn:test",
                             build_args={"AIGC_MODELS": models} if models else {}, copy=list(copy))
    return stack.Stack(tmp_path / "stack.yml", "", {"fn": fn})


def test_stage_links_declared_entries_and_drops_stale_links(tmp_path):
    root = tmp_path / "store"
    make_entry(root, "alpha")
    make_entry(root, "beta")
    st = one_function_stack(tmp_path, "alpha beta")
    lines = stage.stage(st, root)
    folder = tmp_path / "fn" / stage.FOLDER
    assert sorted(p.name for p in folder.iterdir()) == ["alpha", "beta"]
    assert all(p.is_symlink() and p.resolve() == (root / p.name).resolve() for p in folder.iterdir())
    assert len(lines) == 2 and all(line.startswith("staged") for line in lines)
    assert all("unchanged" in line for line in stage.stage(st, root))
    st.functions["fn"].build_args["AIGC_MODELS"] = "beta"
    assert any(line.startswith("unstaged") for line in stage.stage(st, root))
    assert [p.name for p in folder.iterdir()] == ["beta"]


def test_stage_refuses_missing_entries_hostile_names_and_real_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("AIGC_MODEL_REMOTE", raising=False)
    root = tmp_path / "store"
    make_entry(root, "alpha")
    with pytest.raises(errors.ModelNotFound, match="missing"):
        stage.stage(one_function_stack(tmp_path, "missing"), root)
    with pytest.raises(errors.InvalidInput, match="store entry name"):
        stage.stage(one_function_stack(tmp_path, "../../etc"), root)
    (tmp_path / "fn" / stage.FOLDER / "alpha").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="real folder"):
        stage.stage(one_function_stack(tmp_path, "alpha"), root)


def test_image_context_follows_links_like_faas_cli(tmp_path):
    root = tmp_path / "store"
    make_entry(root, "alpha")
    st = one_function_stack(tmp_path, "alpha")
    stage.stage(st, root)
    (tmp_path / "fn" / "build").mkdir()  # faas-cli never copies a handler's build/ or template/
    (tmp_path / "fn" / "template").mkdir()
    context = buildctx.assemble(st.functions["fn"], REPO, tmp_path / "out", image=True)
    staged = context / "function" / stage.FOLDER / "alpha"
    assert not staged.is_symlink() and (staged / "model.bin").read_bytes() == b"weights"
    assert not (context / "function" / "build").exists() and not (context / "function" / "template").exists()
    assert [p for p in context.rglob("*") if p.is_symlink()] == []
    local = buildctx.assemble(st.functions["fn"], REPO, tmp_path / "local")
    link = local / "function" / stage.FOLDER / "alpha"
    assert link.is_symlink() and os.path.isabs(os.readlink(link)), "local contexts link, not copy, the weights"


def test_configuration_copy_lands_in_the_function_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    (tmp_path / "shared").mkdir()
    st = one_function_stack(tmp_path, "", copy=["./docs"])
    context = buildctx.assemble(st.functions["fn"], REPO, tmp_path / "out", image=True)
    assert (context / "function" / "docs" / "architecture.md").read_bytes() == \
        (REPO / "docs" / "architecture.md").read_bytes()
    for bad, message in (("../outside", "outside the project"), (".", "whole project")):
        st = one_function_stack(tmp_path, "", copy=[bad])
        with pytest.raises(ValueError, match=message):
            buildctx.assemble(st.functions["fn"], REPO, tmp_path / "out", image=True)


def test_stack_reads_build_args_options_and_copy(tmp_path):
    (tmp_path / "h").mkdir()
    (tmp_path / "stack.yml").write_text(
        "provider: {name: openfaas}\nconfiguration:\n  copy: [./shared]\n"
        "functions:\n  f1:\n    lang: aigc-onnx\n    handler: ./h\n    image: x\n"
        "    build_args: {AIGC_MODELS: a b}\n    build_options: [dev]\n")
    fn = stack.load(tmp_path / "stack.yml").functions["f1"]
    assert fn.build_args == {"AIGC_MODELS": "a b"} and fn.build_options == ["dev"] and fn.copy == ["./shared"]
    from aigc.container import build

    args = build.build_args(fn, REPO)
    assert args["AIGC_MODELS"] == "a b" and args["ADDITIONAL_PACKAGE"] == "build-essential git"


def test_bake_moves_verified_entries_and_drops_the_rest(tmp_path):
    src, dest = tmp_path / "model-store", tmp_path / "models"
    make_entry(src, "alpha")
    make_entry(src, "beta")
    for path in (src / "alpha").rglob("*"):
        path.chmod(0o600)
    lines = bake.bake(src, dest, ["alpha"])
    assert lines == ["baked alpha: 1 files, 0.0 MB, sha256 verified"]
    assert not src.exists() and sorted(p.name for p in dest.iterdir()) == ["alpha"]
    assert oct((dest / "alpha" / "model.bin").stat().st_mode & 0o777) == "0o644"
    assert not store.open_model("alpha", dest).verify()


def test_bake_fails_the_build_naming_the_fix(tmp_path):
    src, dest = tmp_path / "model-store", tmp_path / "models"
    with pytest.raises(bake.BakeError, match=r"aigc models build alpha && aigc models stage"):
        bake.bake(src, dest, ["alpha"])
    entry = make_entry(src, "alpha")
    (entry / "model.bin").write_bytes(b"weightz")  # same size, other bytes
    with pytest.raises(bake.BakeError, match="damaged.*sha256 mismatch"):
        bake.bake(src, dest, ["alpha"])
    with pytest.raises(bake.BakeError, match="store entry name"):
        bake.bake(src, dest, ["../x"])
    assert bake.main([str(src), str(dest), "alpha"]) == 1
    assert bake.main([str(src), str(dest)]) == 0 and not src.exists()  # no AIGC_MODELS: nothing baked


def test_published_entries_are_world_readable(tmp_path):
    work = tmp_path / ".work"
    make_entry(tmp_path, ".work")
    work.chmod(0o700)
    (work / "model.bin").chmod(0o600)
    assert store.publish(work, tmp_path / "alpha")
    modes = {oct(p.stat().st_mode & 0o777) for p in [tmp_path / "alpha", *(tmp_path / "alpha").iterdir()]}
    assert modes == {"0o755", "0o644"}
    other = tmp_path / ".other"
    shutil.copytree(tmp_path / "alpha", other)
    assert store.publish(other, tmp_path / "alpha", replace=False) is False  # the first one stays
    assert json.loads((tmp_path / "alpha" / "manifest.json").read_text())["name"] == ".work"
