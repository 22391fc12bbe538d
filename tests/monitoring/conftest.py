from tests.evalstore.conftest import monitor_repo  # noqa: F401 - shared fixture
