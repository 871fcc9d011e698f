"""Bad input: one clear message naming the file/key, exit status 2, no traceback, no partial output."""

from __future__ import annotations

import os

import gemmi
import numpy as np
import pytest

from conftest import dataset
from refinekit.cli import main


@pytest.fixture
def small(tmp_path):
    return str(dataset("5e5z", "5e5z.pdb")), str(dataset("5e5z", "5e5z.mtz"))


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.err


def test_missing_model_file(tmp_path, small, capsys):
    code, err = run(["refine", str(tmp_path / "nope.cif"), small[1], "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "nope.cif: file not found" in err
    assert not (tmp_path / "o").exists()


def test_unreadable_model_file(tmp_path, small, capsys):
    bad = tmp_path / "garbage.cif"
    bad.write_text("data_x\nloop_\n_atom_site.id\n_atom_site.Cartn_x\n1\n")
    code, err = run(["refine", str(bad), small[1], "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "garbage.cif" in err
    assert not (tmp_path / "o").exists()


def test_directory_instead_of_file(tmp_path, small, capsys):
    code, err = run(["refine", small[0], str(tmp_path), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a regular file" in err


def test_mtz_without_usable_columns(tmp_path, small, capsys):
    mtz = gemmi.read_mtz_file(small[1])
    out = gemmi.Mtz(with_base=True)
    out.spacegroup, out.cell = mtz.spacegroup, mtz.cell
    out.add_dataset("x")
    out.add_column("FC", "F")
    out.add_column("PHIC", "P")
    data = np.column_stack([mtz.make_miller_array().astype(np.float32),
                            np.ones((mtz.nreflections, 2), np.float32)])
    out.set_data(data)
    path = tmp_path / "nocols.mtz"
    out.write_to_file(str(path))
    code, err = run(["refine", small[0], str(path), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "nocols.mtz" in err and "no usable observations" in err and "FC" in err


def test_not_an_mtz(tmp_path, small, capsys):
    path = tmp_path / "fake.mtz"
    path.write_bytes(b"this is not an mtz file")
    code, err = run(["refine", small[0], str(path), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "fake.mtz" in err and "MTZ" in err


def test_model_and_data_cells_differ(tmp_path, small, capsys):
    st = gemmi.read_structure(small[0])
    c = st.cell
    st.cell = gemmi.UnitCell(c.a * 1.1, c.b, c.c, c.alpha, c.beta, c.gamma)
    path = tmp_path / "bigcell.pdb"
    st.write_pdb(str(path))
    code, err = run(["refine", str(path), small[1], "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "cells differ" in err and "10.607" in err and "9.643" in err


def test_space_groups_differ(tmp_path, small, capsys):
    st = gemmi.read_structure(small[0])
    st.spacegroup_hm = "P 1"
    path = tmp_path / "p1.pdb"
    st.write_pdb(str(path))
    code, err = run(["refine", str(path), small[1], "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "space group" in err


def test_unknown_config_key(tmp_path, small, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[terms.ls]\nwieght = 2.0\n")
    code, err = run(["refine", *small, "--config", str(cfg), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "terms.ls.wieght" in err and "expected one of" in err


def test_plugin_not_installed(tmp_path, small, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[fcalc]\nengine = "gpu-magic"\n')
    code, err = run(["refine", *small, "--config", str(cfg), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "no fcalc named 'gpu-magic'" in err and "fft" in err
    code, err = run(["fcalc", small[0], "--d-min", "2", "--engine", "nope", "-o",
                     str(tmp_path / "x.mtz")], capsys)
    assert code == 2 and "no fcalc named 'nope'" in err


def test_required_plugin_missing(tmp_path, small, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('required_plugins = ["refinekit-qm>=2"]\n')
    code, err = run(["refine", *small, "--config", str(cfg), "-o", str(tmp_path / "o")], capsys)
    assert code == 2 and "refinekit-qm" in err


def test_bad_d_min(tmp_path, small, capsys):
    code, err = run(["fcalc", small[0], "--d-min", "-1", "-o", str(tmp_path / "x.mtz")], capsys)
    assert code == 2 and "d-min" in err


def test_never_overwrites_inputs(tmp_path, small, capsys):
    model = tmp_path / "refined.cif"
    gemmi.read_structure(small[0]).make_mmcif_document().write_file(str(model))
    before = model.read_bytes()
    code, err = run(["refine", str(model), small[1], "-o", str(tmp_path)], capsys)
    assert code == 2 and "overwrite an input" in err
    assert model.read_bytes() == before
    code, err = run(["fcalc", small[0], "--d-min", "2", "-o", small[0]], capsys)
    assert code == 2 and "overwrite an input" in err


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    from refinekit.plugin_api.fileio import atomic_output

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
