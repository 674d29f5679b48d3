// The seed's Express verifier ("Верификация исходящего вебхука (JavaScript)"
// in webhooks-examples.ru.md), run by the tests as a real receiver would run
// it. Changed from the seed, and only this: WEBHOOK_SECRETS comes from the
// environment (JSON), the server listens on 127.0.0.1 on PORT (0 = any) and
// prints the chosen port as its first stdout line, every answered request is
// recorded and `GET /received` returns the records, and FAIL_FIRST=n answers
// 500 to the first n webhook requests. verifyWebhookSignature and the
// /webhooks handler's checks are character-for-character the seed's.
const crypto = require('crypto');
const express = require('express');

const app = express();
app.use(express.json());

const WEBHOOK_SECRETS = JSON.parse(process.env.WEBHOOK_SECRETS || '{}');

// Test additions: what was received, and deliberate failures.
const received = [];
let failFirst = parseInt(process.env.FAIL_FIRST || '0', 10);

app.use('/webhooks', (req, res, next) => {
    if (req.method !== 'POST') {
        return next();
    }
    if (failFirst > 0) {
        failFirst -= 1;
        received.push({ verified: false, status: 500, error: 'FAIL_FIRST', payload: req.body, headers: req.headers });
        return res.status(500).json({ error: "failing on purpose (FAIL_FIRST)" });
    }
    // Requests the seed's handler refuses (401) are recorded too, so a test
    // can assert that none happened.
    res.on('finish', () => {
        if (res.statusCode !== 200) {
            received.push({ verified: false, status: res.statusCode, payload: req.body, headers: req.headers });
        }
    });
    next();
});

app.get('/received', (req, res) => {
    res.status(200).json(received);
});

function verifyWebhookSignature(payload, signature, timestamp, secret) {
    // Reconstruct message
    const message = `${timestamp}.${JSON.stringify(payload)}`;

    // Calculate expected signature
    const expected = "sha256=" + crypto
        .createHmac('sha256', secret)
        .update(message)
        .digest('hex');

    // Compare
    return crypto.timingSafeEqual(
        Buffer.from(signature),
        Buffer.from(expected)
    );
}

app.post('/webhooks', (req, res) => {
    const signature = req.headers['x-webhook-signature'];
    const timestamp = req.headers['x-webhook-timestamp'];
    const webhookId = req.headers['x-webhook-id'];
    const payload = req.body;

    // Validate webhook exists
    if (!WEBHOOK_SECRETS[webhookId]) {
        return res.status(401).json({ error: "Unknown webhook" });
    }

    // Verify signature
    try {
        const isValid = verifyWebhookSignature(
            payload,
            signature,
            timestamp,
            WEBHOOK_SECRETS[webhookId]
        );

        if (!isValid) {
            return res.status(401).json({ error: "Invalid signature" });
        }
    } catch (err) {
        return res.status(401).json({ error: "Signature verification failed" });
    }

    // Process webhook
    console.log(`Event: ${payload.event_type}`);
    console.log(`Data:`, payload.data);

    // Test addition: keep what was verified.
    received.push({ verified: true, status: 200, payload: payload, headers: req.headers });

    res.status(200).json({
        status: "received",
        message: "Webhook processed successfully"
    });
});

const server = app.listen(parseInt(process.env.PORT || '0', 10), '127.0.0.1', () => {
    console.log(String(server.address().port));
});
