# A first flintbit: reads an input key, logs, and returns output.
# flint run examples:hello.py --set name=Ada
name = input.get("name", "world")
log.info(f"greeting {name}")
output.set("greeting", f"Hello, {name}!").set("job", input.jobid)
