"""The API against its own OpenAPI document: schemathesis generates valid and invalid requests for every
operation and its default checks hold (no 5xx, every status and body as documented, invalid data
rejected). Driven through Hypothesis directly: schemathesis' pytest plugin does not run on pytest 9."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from mnist_mlp import serve

EXAMPLES = 80  # per operation and mode: bounded for `make test`
OPERATIONS = ["GET /api/health", "GET /api/model", "POST /api/predict"]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


@pytest.fixture(scope="module")
def api_schema(trained):
    model, run = trained
    return schemathesis.openapi.from_asgi("/openapi.json", serve.create_app(run, model=model))


def test_every_operation_is_tested(api_schema):
    found = [f"{op.method.upper()} {op.path}" for op in (r.ok() for r in api_schema.get_all_operations())]
    assert sorted(found) == OPERATIONS


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_matches_its_openapi_document(api_schema, label, mode):
    operation = next(
        op
        for op in (r.ok() for r in api_schema.get_all_operations())
        if f"{op.method.upper()} {op.path}" == label
    )
    if mode.is_negative and not operation.body:
        pytest.skip("no parameters or body to make invalid")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        # "string, format binary" cannot say "a decodable image": random bytes rightly get 400, so only
        # JSON pixels must be accepted whenever they match the schema; every other check runs on all
        binary = case.media_type not in (None, "application/json")
        case.call_and_validate(excluded_checks=[positive_data_acceptance] if binary else [])

    check()
