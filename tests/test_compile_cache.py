"""The persistent compilation cache: a second process finds every program the first compiled,
and the command line turns the cache on (numpyro_rbm.compile_cache)."""

import os
import subprocess
import sys

import pytest

from numpyro_rbm import compile_cache

# a few of the library's compiled programs (initialisation, exact log Z, Gibbs sweeps), in a
# fresh process each time
SCRIPT = """
import sys, jax, numpyro_rbm as nrbm
nrbm.enable_compile_cache(sys.argv[1])
params = nrbm.init_params(jax.random.key(0), 6, 3, weight_scale=1.0)
v = nrbm.kernels.gibbs(jax.random.key(1), params, jax.numpy.zeros((4, 6)), 5)[0]
print(float(nrbm.log_partition(params)), v.sum())
"""


def _run(cache, **env):
    env = dict(os.environ, **env)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache)], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout, sorted(p.name for p in cache.iterdir())


def test_a_second_process_compiles_nothing_new(tmp_path):
    cache = tmp_path / "cache"
    first_out, first = _run(cache)
    assert len(first) >= 3
    second_out, second = _run(cache)
    assert second == first  # every program found: nothing compiled and written again
    assert second_out == first_out  # and the loaded programs compute the same numbers


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(compile_cache.CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert compile_cache.default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(compile_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_cache_dir() == tmp_path / "numpyro-rbm" / "jax"


@pytest.mark.parametrize("value,enabled", [("1", True), ("0", False), ("no", False), ("", True)])
def test_the_command_line_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(compile_cache.ENABLE_ENV, value)
    assert compile_cache.cache_enabled_by_environment() is enabled


def test_a_folder_given_to_jax_is_kept(monkeypatch, tmp_path):
    """A user's own ``jax_compilation_cache_dir`` wins over the library's default."""
    updates = {}

    class Config:  # stands in for jax.config: this process's JAX settings stay untouched
        jax_compilation_cache_dir = str(tmp_path / "users")

        def update(self, name, value):
            updates[name] = value

    monkeypatch.setattr(compile_cache.jax, "config", Config())
    assert compile_cache.enable_compile_cache() == tmp_path / "users"
    assert updates["jax_compilation_cache_dir"] == str(tmp_path / "users")
    assert updates["jax_persistent_cache_min_compile_time_secs"] == 0.0
