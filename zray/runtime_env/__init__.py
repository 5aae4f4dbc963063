"""Runtime environments: ``working_dir`` and ``py_modules`` shipped to workers.

    driver                      head's host                 node N
    ------                      -----------                 ------
    resolve(): zip local dir,   PackageStore actor keeps    worker: fetch once per
    content hash -> URI;        <hash>.zip on disk under    node, unpack under
    upload if the store lacks   session/runtime_resources   runtime_resources/node-N,
    it (chunked actor calls)                                chdir + sys.path

The task spec carries only URIs (``zray://pkg_<sha>.zip``); workers are
pooled per code environment (see keys.code_env_key).
"""
