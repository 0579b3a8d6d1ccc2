"""pytest_test: one Bazel test target that runs one pytest file with tests/bazel_pytest.py."""

def pytest_test(src, tags = []):
    """Declares a py_test named after `src` (tests/test_x.py -> test_x).

    `long` (15 min) leaves room for the slow end-to-end and multi-process tests;
    pytest-timeout bounds each test case. `tags`: e.g. ["end_to_end"], which .bazelrc
    leaves out of `bazel test //...` (see README, Tests).
    """
    native.py_test(
        name = src[len("tests/"):-len(".py")],
        size = "medium",
        timeout = "long",
        srcs = ["tests/bazel_pytest.py", src],
        args = ["$(location %s)" % src],
        # Test files import `conftest` as a top-level module; Bazel's automatic
        # __init__.py files would turn tests/ into a package and break that.
        legacy_create_init = False,
        main = "tests/bazel_pytest.py",
        deps = [":test_support"],
        tags = tags,
    )
