"""foclip's reference CLIPs: data from Debian packages, open_clip_train driver, held-out evaluation."""
