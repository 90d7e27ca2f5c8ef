Health checks: TCPCheck, HTTPCheck, AgentCheck, passive checks from live traffic, slow start, UP/DOWN/DRAIN/MAINT transitions logged once.
