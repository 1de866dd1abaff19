"""Deployment recipes: they parse, and agree with each other and with the images."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU_IMAGE, GPU_IMAGE = "rv2dist/rv2dist:0.1.0", "rv2dist/rv2dist-gpu:0.1.0"


def _yaml(path):
    return list(yaml.safe_load_all((ROOT / path).read_text()))


def _entrypoint_roles():
    text = (ROOT / "docker/entrypoint.sh").read_text()
    return set(re.findall(r"^\s+([a-z-]+)\)", text, flags=re.M))


def _containers(document):
    """Every container spec in a DaskCluster / DaskWorkerGroup / DaskJob document."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "containers":
                    found.extend(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return found


def test_images_install_through_the_shared_script():
    for dockerfile in ("docker/Dockerfile", "docker/Dockerfile.gpu"):
        text = (ROOT / dockerfile).read_text()
        assert "bash /opt/rv2dist/docker/install.sh" in text
        assert 'ENTRYPOINT ["/opt/rv2dist/docker/entrypoint.sh"]' in text
        assert "EXPOSE 8786 8787" in text
    assert "rapidsai/base" in (ROOT / "docker/Dockerfile.gpu").read_text()
    assert "docker/install.sh" in (ROOT / ".ci/run").read_text()  # CI installs the same way
    subprocess.run(["bash", "-n", str(ROOT / "docker/install.sh")], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "docker/entrypoint.sh")], check=True)


def test_compose_file_is_consistent():
    compose = _yaml("docker/compose.yaml")[0]
    services = compose["services"]
    roles = _entrypoint_roles()
    assert services["scheduler"]["ports"] == ["127.0.0.1:8786:8786", "127.0.0.1:8787:8787"]
    assert services["scheduler"]["command"][0] == "scheduler"
    assert services["worker"]["image"] == CPU_IMAGE and services["gpu-worker"]["image"] == GPU_IMAGE
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    for name, service in services.items():
        assert "data:/data" in service["volumes"], name
        if "command" in service:
            assert service["command"][0] in roles, name
        if name != "scheduler":
            assert service["environment"]["DASK_SCHEDULER_ADDRESS"] == "tcp://scheduler:8786"
    assert "GPU=1" in services["gpu-worker"]["command"]


def test_kubernetes_manifests_are_consistent():
    roles = _entrypoint_roles()
    documents = _yaml("deploy/kubernetes/daskcluster.yaml") + _yaml("deploy/kubernetes/daskjob.yaml")
    assert [d["kind"] for d in documents] == ["DaskCluster", "DaskWorkerGroup", "DaskJob"]
    assert all(d["apiVersion"] == "kubernetes.dask.org/v1" for d in documents)
    for document in documents:
        for container in _containers(document):
            assert container["image"] in (CPU_IMAGE, GPU_IMAGE)
            role = container["args"][0]
            assert role in roles or role == "run", container
            if role == "cuda-worker":
                assert container["image"] == GPU_IMAGE and "GPU=1" in container["args"]
                assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
            if role == "scheduler":
                assert {p["containerPort"] for p in container["ports"]} == {8786, 8787}
            if role != "scheduler":
                assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    for document in (documents[0], documents[2]):
        spec = document["spec"] if document["kind"] == "DaskCluster" else document["spec"]["cluster"]["spec"]
        assert spec["scheduler"]["service"]["type"] == "ClusterIP"
        assert {p["port"] for p in spec["scheduler"]["service"]["ports"]} == {8786, 8787}
    assert documents[2]["spec"]["job"]["spec"]["containers"][0]["args"][:2] == ["run", "/data/job.toml"]


def test_helm_values_match_the_images_and_ports():
    values = _yaml("deploy/helm/values.yaml")[0]
    for part in ("scheduler", "worker"):
        image = values[part]["image"]
        assert f"{image['repository']}:{image['tag']}" == CPU_IMAGE
    assert values["scheduler"]["servicePort"] == 8786 and values["webUI"]["servicePort"] == 8787
    assert values["scheduler"]["serviceType"] == "ClusterIP"
    assert {"name": "data", "mountPath": "/data"} in values["worker"]["mounts"]["volumeMounts"]
    # the chart runs `dask ...` itself: the entrypoint must pass such commands through
    assert "dask" in _entrypoint_roles() or "dask|" in (ROOT / "docker/entrypoint.sh").read_text()


def test_jobqueue_recipe_writes_a_gpu_worker_script():
    pytest.importorskip("dask_jobqueue")
    import importlib.util

    spec = importlib.util.spec_from_file_location("jobqueue_cluster", ROOT / "deploy/slurm/jobqueue_cluster.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cluster = recipe.gpu_cluster(partition="gpu", account="proj", gpus_per_job=2)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:2" in script and "#SBATCH -p gpu" in script and "#SBATCH -A proj" in script
    assert re.search(r"-m dask_cuda\.cli tcp://\S+", script), script
    assert "--resources GPU=1" in script and "--rmm-pool-size 70%" in script


def test_sbatch_script_uses_the_scheduler_file():
    text = (ROOT / "deploy/slurm/rv2dist.sbatch").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "deploy/slurm/rv2dist.sbatch")], check=True)
    assert "dask scheduler --scheduler-file" in text and "dask cuda worker --scheduler-file" in text
    assert 'rv2dist run "$job_file" --scheduler-file "$scheduler_file"' in text
    assert "#SBATCH --gres=gpu:" in text
