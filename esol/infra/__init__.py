"""Infrastructure: configuration, files, logs, progress, runtime, devices and numerical guards."""
