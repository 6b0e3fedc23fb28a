// MQTT 5.0 through MQTT.js, run by tests/interop_cli.rs: topic aliases both ways (the
// publisher assigns its own, the subscriber accepts up to 3 from the broker and resolves
// them), a Subscription Identifier, user properties and a PUBACK reason code. Prints one
// line per check: `name json`.
const mqtt = require("mqtt");

const port = Number(process.argv[2]);
const url = `mqtt://127.0.0.1:${port}`;
const out = {};
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
setTimeout(() => fail("timed out: " + JSON.stringify(out)), 15000).unref();

const connected = (client) =>
  new Promise((resolve, reject) => {
    client.once("connect", resolve);
    client.once("error", reject);
  });

(async () => {
  const sub = mqtt.connect(url, {
    protocolVersion: 5,
    clientId: "js-sub",
    properties: { topicAliasMaximum: 3 },
  });
  const subConnack = await connected(sub);
  out.sub_connack = {
    reason: subConnack.reasonCode,
    topic_alias_maximum: subConnack.properties.topicAliasMaximum,
  };
  const granted = await sub.subscribeAsync("js/#", {
    qos: 1,
    properties: { subscriptionIdentifier: 9 },
  });
  out.granted = granted.map((g) => g.qos);

  const topics = ["js/a/long/topic", "js/b/long/topic", "js/a/long/topic", "js/c/long/topic",
    "js/d/long/topic", "js/a/long/topic", "js/a/long/topic", "js/b/long/topic"];
  const received = [];
  const all = new Promise((resolve) => {
    sub.on("message", (topic, payload, packet) => {
      received.push({
        topic,
        payload: payload.toString(),
        alias: packet.properties && packet.properties.topicAlias !== undefined,
        sid: packet.properties && packet.properties.subscriptionIdentifier,
        user: packet.properties && packet.properties.userProperties,
      });
      if (received.length === topics.length) resolve();
    });
  });

  const pub = mqtt.connect(url, {
    protocolVersion: 5,
    clientId: "js-pub",
    autoAssignTopicAlias: true,
  });
  const pubacks = [];
  pub.on("packetreceive", (p) => {
    if (p.cmd === "puback") pubacks.push(p.reasonCode || 0);
  });
  await connected(pub);
  for (const [i, topic] of topics.entries()) {
    await pub.publishAsync(topic, String(i), {
      qos: 1,
      properties: { userProperties: { n: String(i) } },
    });
  }
  await pub.publishAsync("nobody/listens", "x", { qos: 1 });
  out.puback_reasons = [...new Set(pubacks)];
  await all;
  out.topics_resolved = received.every((m, i) => m.topic === topics[i] && m.payload === String(i));
  out.aliased = received.filter((m) => m.alias).length;
  out.sids = [...new Set(received.map((m) => JSON.stringify(m.sid)))];
  out.user_properties = received.every((m, i) => m.user && m.user.n === String(i));
  await Promise.all([sub.endAsync(), pub.endAsync()]);
  for (const [k, v] of Object.entries(out)) console.log(k, JSON.stringify(v));
})().catch((e) => fail(e.stack || String(e)));
