"""Offline stand-in for rules_java: the symbols @bazel_tools loads, as the native rules."""
java_import = native.java_import
java_runtime = native.java_runtime
java_toolchain = native.java_toolchain
