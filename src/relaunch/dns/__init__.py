"""DNS: switching a site's records (switch) and asking authoritative servers what they answer."""
