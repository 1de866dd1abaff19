"""Every file rv2dist reads or writes: inputs, activation stores, results."""
