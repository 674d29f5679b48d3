// The seed's Express verifier changed the one way README ("Rotating a
// webhook's secret") tells receivers built on it to change it, so that it
// verifies during a rotation's overlap whichever secret it holds: the
// seed's verifyWebhookSignature, unchanged, is tried on X-Webhook-Signature
// and then on each value of X-Webhook-Signature-Next. Everything else is
// verifier.js (port, secrets and the record of requests from the test).
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

    // Verify signature: the seed's header, then each newer signature sent
    // during a rotation's overlap.
    try {
        const candidates = [signature].concat(
            (req.headers['x-webhook-signature-next'] || '').split(',').filter(s => s)
        );
        const isValid = candidates.some(candidate => {
            try {
                return verifyWebhookSignature(
                    payload,
                    candidate.trim(),
                    timestamp,
                    WEBHOOK_SECRETS[webhookId]
                );
            } catch (err) {
                return false;
            }
        });

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
