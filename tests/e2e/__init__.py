"""The shutdown rehearsal (issue 8): kopir's whole path in network namespaces, with a citizen
whose firewall lets one port through."""
