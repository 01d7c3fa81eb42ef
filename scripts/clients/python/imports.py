"""Imports every module of the generated client (conveyor_client on PYTHONPATH): one
that does not import is a generation defect the generator did not report. Prints one
`warning:` line per such module (scripts/check-clients counts them as generation
warnings); the flow that needs the module says what it did instead."""

import importlib
import pkgutil

import conveyor_client

for module in pkgutil.walk_packages(conveyor_client.__path__, "conveyor_client."):
    try:
        importlib.import_module(module.name)
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        print(f"warning: generated module {module.name} does not import: {type(error).__name__}: {error}")
