"""OpenAPI links: which response supplies which later request's parameters.

Clients and tools that follow them (schemathesis' stateful tests chain calls
along them) learn that a created experiment's id opens its start, results,
assignment and stop, and that a training job names the model version that its
registry, deployment and promotion operations take.
"""

from __future__ import annotations

from typing import Any

PREFIX = "/api/v1/learning"

_EXPERIMENT = {"experiment_id": "$response.body#/experiment_id"}
_EXPERIMENT_OPS = {
    "GetExperiment": ("/experiments/{experiment_id}", "get", _EXPERIMENT),
    "StartExperiment": ("/experiments/{experiment_id}/start", "post", _EXPERIMENT),
    "ExperimentResults": ("/experiments/{experiment_id}/results", "get", _EXPERIMENT),
    "AssignUser": ("/experiments/{experiment_id}/assignment/{user_id}", "get", _EXPERIMENT),
    "StopExperiment": ("/experiments/{experiment_id}/stop", "post", _EXPERIMENT),
}
_VERSION = {"version": "$response.body#/version"}
_FIRST_VERSION = {"version": "$response.body#/0/version"}
_MODEL_OPS = {
    "GetModel": ("/models/{version}", "get"),
    "DeployModel": ("/models/{version}/deploy", "post"),
}
_DEPLOYMENT_OPS = {
    "Deployment": ("/models/deployment", "get", {}),
    "Promote": ("/models/promote", "post", {}),
    "Rollback": ("/models/rollback", "post", {}),
}

LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/experiments", "post", "201"): _EXPERIMENT_OPS,
    ("/experiments/{experiment_id}/start", "post", "200"): _EXPERIMENT_OPS,
    ("/models/retrain", "post", "202"): {
        "GetJob": ("/models/jobs/{job_id}", "get", {"job_id": "$response.body#/job_id"})
    },
    ("/models/jobs/{job_id}", "get", "200"): {
        name: (path, method, _VERSION) for name, (path, method) in _MODEL_OPS.items()
    },
    ("/models", "get", "200"): {
        name: (path, method, _FIRST_VERSION) for name, (path, method) in _MODEL_OPS.items()
    },
    ("/models/{version}/deploy", "post", "200"): _DEPLOYMENT_OPS,
    ("/models/promote", "post", "200"): _DEPLOYMENT_OPS,
}


def _ref(path: str, method: str) -> str:
    """A JSON pointer to an operation (``/`` escaped as ``~1``)."""
    escaped = (PREFIX + path).replace("~", "~0").replace("/", "~1")
    return f"#/paths/{escaped}/{method}"


def add_links(schema: dict[str, Any]) -> None:
    """Add :data:`LINKS` to ``schema``'s responses; a link to or from an operation the
    schema lacks is refused (KeyError), so a renamed route cannot leave one dangling."""
    paths = schema["paths"]
    for (path, method, status), links in LINKS.items():
        response = paths[PREFIX + path][method]["responses"][status]
        found = response.setdefault("links", {})
        for name, (target, target_method, parameters) in links.items():
            paths[PREFIX + target][target_method]  # the target must exist (KeyError)
            link: dict[str, Any] = {"operationRef": _ref(target, target_method)}
            if parameters:
                link["parameters"] = dict(parameters)
            found[name] = link
