# flint-util:smtp:operation:smtp.py -- send an email through an smtp connector.
# The port of Flint's flint-util smtp flintbit (smtp.rb).
#
# Inputs: connector_name (default "smtp"), target, from, username (or user_name), password,
#   to, cc, bcc, subject, body, attachments, content-type; and, passed through when given, port,
#   security, reply-to, text-body, body-file, headers, importance, sensitivity, read-receipt,
#   follow-up, timeout.
# Output on success: {"result": "success", "message-id", "accepted", "refused", ...}.
# A connector failure ends this flintbit with the connector's exit-code and message.

log.trace("Started executing 'flint-util:smtp:operation:smtp.py' flintbit")

connector_name = input.get("connector_name") or "smtp"
username = input.get("username") or input.get("user_name")

request = connector(connector_name)
for key in ("target", "port", "security", "from", "to", "cc", "bcc", "reply-to", "subject", "body",
            "text-body", "body-file", "attachments", "content-type", "headers", "importance",
            "sensitivity", "read-receipt", "follow-up", "timeout"):
    value = input.get(key)
    if value is not None:
        request.set(key, value)
if username:
    request.set("username", username)
if input.get("password"):
    request.set("password", input.get("password"))

# Never log the password; the recipients and subject are what an operator needs to see.
log.info(f"sending through connector {connector_name}: to={input.get('to')} cc={input.get('cc')} "
         f"subject={input.get('subject')!r}")

response = request.sync()

if response.exitcode == 0:
    log.info(f"SMTP connector succeeded: {response.message}")
    output.set("result", "success")
    for key, value in response.output.items():
        if key != "result":
            output.set(key, value)
else:
    log.error(f"SMTP connector failed: exit-code {response.exitcode}: {response.message}")
    output.exit(response.exitcode, response.message)

log.trace("Finished executing 'flint-util:smtp:operation:smtp.py' flintbit")
