// Verifies received requests with the official Standard Webhooks library.
//
//   node verify_signature.mjs <secret> <requests.jsonl>
//
// The file holds one request a line, as test/receiver.py records them.
// Prints one line per request: "ok <webhook-id>" or "fail <webhook-id> <why>".
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";

const [secret, file] = process.argv.slice(2);
const webhook = new Webhook(secret);
for (const line of readFileSync(file, "utf8").split("\n")) {
  if (!line) continue;
  const request = JSON.parse(line);
  const id = request.headers["webhook-id"];
  try {
    webhook.verify(request.body, request.headers);
    console.log(`ok ${id}`);
  } catch (error) {
    console.log(`fail ${id} ${error.message}`);
  }
}
