"""kdstudio's built-in plugins. Each subpackage is registered through the `kdstudio` entry-point group,
exactly as a third party's plugin would be; the core never imports them."""
