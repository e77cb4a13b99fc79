import this_module_does_not_exist_cenote  # noqa: F401
