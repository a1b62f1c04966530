# examples:mail:autoreply.py -- answer unseen mail that matches a search, then file it.
#
# 1. search the folder (server-side) for unseen messages matching `criteria`;
# 2. read each one, reply to its sender through the smtp connector (In-Reply-To/References set);
# 3. move it to `to-folder` (created when missing).
# The reply is sent before the move: if a move fails the run stops with that error, and the
# message stays unseen in its folder, so the operator sees it rather than losing it.
#
# Inputs: criteria (required; e.g. {"field": "SUBJECT", "value": "help"}), imap_connector (default
# "imap"), smtp_connector (default "smtp"), folder (default INBOX), to-folder (default "Handled"),
# reply-body (default below), max (default 20).
# Output: {"handled": [{"messageId", "repliedTo", "reply-message-id"}], "count": N}

imap_name = input.get("imap_connector") or "imap"
smtp_name = input.get("smtp_connector") or "smtp"
folder = input.get("folder") or "INBOX"
to_folder = input.get("to-folder") or "Handled"
criteria = input.get("criteria")
if not criteria:
    output.exit(-2, "'criteria' is required")
reply_body = input.get("reply-body") or (
    "Thank you for your message. It has been received and filed; the operations team will follow up.")

found = (connector(imap_name).set("action", "search").set("folder", folder).set("unseen", True)
         .set("criteria", criteria).set("max", input.get("max") or 20).sync())
if found.exitcode != 0:
    output.exit(found.exitcode, f"search failed: {found.message}")

handled = []
output.set("handled", handled).set("count", 0)
for hit in found.get("result") or []:
    message_id = hit["messageId"]
    message = connector(imap_name).set("action", "read").set("folder", folder).set("message-id", message_id).sync()
    if message.exitcode != 0:
        output.exit(message.exitcode, f"read {message_id} failed: {message.message}")
    original = message.get("result")
    subject = original.get("subject") or ""
    reply = (connector(smtp_name).set("to", original["fromAddress"])
             .set("subject", subject if subject.lower().startswith("re:") else f"Re: {subject}")
             .set("body", reply_body).set("content-type", "text/plain")
             .set("headers", {"In-Reply-To": message_id, "References": message_id}).sync())
    if reply.exitcode != 0:
        output.exit(reply.exitcode, f"reply to {original['fromAddress']} failed: {reply.message}")
    moved = (connector(imap_name).set("action", "move").set("message-id", message_id)
             .set("from-folder", folder).set("to-folder", to_folder).sync())
    if moved.exitcode != 0:
        output.exit(moved.exitcode, f"move of {message_id} to {to_folder} failed: {moved.message}")
    log.info(f"answered {original['fromAddress']} about {subject!r}; filed in {to_folder}")
    handled.append({"messageId": message_id, "repliedTo": original["fromAddress"],
                    "reply-message-id": reply.get("message-id")})
    output.set("count", len(handled))
