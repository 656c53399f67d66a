"""Stand-ins for the outside world (exchange emulators); no production path imports them."""
