import pytest


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect server for the whole session (≈ 9 s to start; minutes on a machine loaded 10x over)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=600):
        yield
