"""``logs/sys/job_recipe.json``: the deployment written field by field as JSON, read back as
it ran, but for the secret values it does not keep."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from daskscore.config.options import JobOptions
from daskscore.config.settings import Deployment, Model, RetrySettings, Settings
from daskscore.engine.recipe import MASK, read_recipe, write_recipe


def _deployment(tmp_path: Path, model: Model | None) -> Deployment:
    return Deployment(
        code=tmp_path / "code",
        scoring_script=tmp_path / "code" / "score.py",
        model=model,
        settings=Settings(
            instance_count=2,
            max_concurrency_per_instance=3,
            mini_batch_size="500 rows",
            output_action="summary_only",
            output_file_name="out.csv",
            retry_settings=RetrySettings(max_retries=0, timeout=12.5),
            error_threshold=7,
            logging_level="debug",
            environment_variables={"MODE": "fast", "API_TOKEN": "tok-123456", "x_key": "ab"},
        ),
        source=tmp_path / "deployment.yml",
        warnings=("deployment.yml: unknown key 'settings.foo' (ignored)",),
        lenient=True,
    )


def test_the_recipe_gives_the_deployment_back_but_its_secret_values(tmp_path: Path) -> None:
    for model in (Model(path=tmp_path / "model", name="m"), Model(path="s3://b/m"), None):
        deployment = _deployment(tmp_path, model)
        out = tmp_path / f"out-{model is not None and model.is_url}-{model is None}"
        path = write_recipe(out, "job1", deployment, "in", JobOptions(), {"code": "h"}, 3)

        recipe = read_recipe(out)

        assert recipe.masked == ("API_TOKEN", "x_key")  # (by name, whatever the length)
        variables = {"MODE": "fast", "API_TOKEN": MASK, "x_key": MASK}
        kept = dataclasses.replace(deployment.settings, environment_variables=variables)
        assert recipe.deployment == dataclasses.replace(deployment, settings=kept)
        for f in dataclasses.fields(Deployment):  # (those that equality does not compare too)
            got, want = getattr(recipe.deployment, f.name), getattr(deployment, f.name)
            assert got == want or f.name == "settings", f.name
        assert recipe.deployment.settings.retry_settings.timeout == 12.5
        assert "tok-123456" not in path.read_text()
        assert json.loads(path.read_text())["version"] == 2
