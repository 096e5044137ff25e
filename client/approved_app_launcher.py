"""A hospital's app launcher: Flower's ``flower-superexec`` that starts every ClientApp through the approval check.

With ``flower-supernode --isolation process`` a SuperNode starts no app processes itself;
a separate launcher fetches its tasks from the SuperNode's local runtime API
(authenticated with the ``--superexec-auth-secret-file`` both share) and starts them.
This launcher is Flower's own, with one change: a ClientApp task starts
``client.approved_clientapp`` (which refuses a bundle the hospital did not approve)
instead of ``flwr-clientapp``. It takes ``flower-superexec``'s arguments:

    python -m client.approved_app_launcher --insecure --runtime-api-address 127.0.0.1:9094 \\
        --superexec-auth-secret-file /etc/segguided/keys/superexec.secret
"""

from __future__ import annotations

import subprocess
import sys

import flwr
import flwr.supercore.superexec.run_superexec as flower_superexec_loop
from flwr.supercore.cli.flower_superexec import flower_superexec
from flwr.supercore.constant import ExecutorType, TaskType
from flwr.supercore.superexec.executor import LaunchResult
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
from flwr.supercore.superexec.executor.types import ExecutionSpec

from segguided_federation.flower_pin import VERIFIED_FLOWER_VERSIONS

APPROVED_CLIENTAPP_MODULE = "client.approved_clientapp"


def clientapp_command(spec: ExecutionSpec) -> list[str]:
    """The command that runs one ClientApp task through the approval check.

    The same arguments Flower gives ``flwr-clientapp``. ``-P`` (Python 3.11+) keeps the
    launcher's working folder off ``sys.path``, so the check is imported from the
    installed package, never from a file that happens to lie in that folder.
    """
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    command = [sys.executable, *safe_path, "-m", APPROVED_CLIENTAPP_MODULE,
               "--runtime-api-address", spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        command.append("--insecure")
    elif spec.root_certificates_path is not None:
        command += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        command += ["--parent-pid", str(spec.parent_pid)]
    if spec.runtime_dependency_install:
        command.append("--allow-runtime-dependency-installation")
    return command


class ApprovedClientAppExecutor(SubprocessExecutor):
    """Flower's subprocess executor, starting ClientApp tasks as ``client.approved_clientapp``.

    Other task types (Flower's agent, connector and model apps) are refused: a hospital's
    SuperNode runs ClientApps only.
    """

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"this hospital's launcher runs ClientApps only, not {spec.task_type}")
        subprocess.Popen(clientapp_command(spec))  # noqa: S603 - our own module, Flower's arguments
        return LaunchResult.accepted()


def approved_executor(executor_type: ExecutorType, *args, **kwargs) -> ApprovedClientAppExecutor:  # noqa: ANN002, ANN003
    """Stands in for Flower's ``get_executor``: the subprocess executor only, with the approval check."""
    if executor_type != ExecutorType.SUBPROCESS:
        raise ValueError(f"the hospital's launcher supports --executor subprocess only, not {executor_type}")
    return ApprovedClientAppExecutor()


def main() -> None:
    """Run ``flower-superexec`` (same arguments) with ``ApprovedClientAppExecutor``."""
    if flwr.__version__ not in VERIFIED_FLOWER_VERSIONS:
        sys.exit(f"client.approved_app_launcher is verified against flwr {', '.join(VERIFIED_FLOWER_VERSIONS)}, "
                 f"but flwr {flwr.__version__} is installed")
    flower_superexec_loop.get_executor = approved_executor
    sys.argv[0] = "python -m client.approved_app_launcher"
    flower_superexec()


if __name__ == "__main__":
    main()
