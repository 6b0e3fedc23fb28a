"""MQTT 5.0 through Eclipse Paho Python 2.x, run by tests/interop_cli.rs against a broker
with shared subscriptions off. Prints one line per check: `name json`."""
import json, sys, threading, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

port = int(sys.argv[1])
out = {}

def client(cid, **kw):
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                       protocol=mqtt.MQTTv5, **kw)

def connect(c, props=None, clean_start=True):
    got = {}
    ready = threading.Event()
    def on_connect(client, userdata, flags, reason, properties):
        got["reason"] = reason.value
        got["session_present"] = flags.session_present
        got["props"] = properties.json() if properties else {}
        ready.set()
    c.on_connect = on_connect
    c.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
    c.loop_start()
    assert ready.wait(10), "no CONNACK"
    return got

# Subscriber: a Subscription Identifier, and a session that outlives its connection.
sub = client("paho5-sub")
msgs = []
got_msg = threading.Condition()
subacks = []
def on_message(client, userdata, msg):
    with got_msg:
        p = msg.properties.json() if msg.properties else {}
        msgs.append({"topic": msg.topic, "payload": msg.payload.decode(), "qos": msg.qos,
                     "props": p})
        got_msg.notify_all()
def on_subscribe(client, userdata, mid, reasons, properties):
    with got_msg:
        subacks.append([r.value for r in reasons])
        got_msg.notify_all()
sub.on_message, sub.on_subscribe = on_message, on_subscribe
cp = Properties(PacketTypes.CONNECT)
cp.SessionExpiryInterval = 60
out["sub_connack"] = connect(sub, cp, clean_start=False)
sp = Properties(PacketTypes.SUBSCRIBE)
sp.SubscriptionIdentifier = 42
sub.subscribe("p5/#", qos=1, properties=sp)
sub.subscribe("$share/g/x", qos=0)  # refused: shared subscriptions are off (0x9E)

def wait(cond):
    with got_msg:
        assert got_msg.wait_for(cond, 10), "waited for %r / %r" % (msgs, subacks)

wait(lambda: len(subacks) == 2)
out["subacks"] = subacks

# Publisher: every forwarded property, an inbound topic alias, and PUBACK reason codes.
pub = client("paho5-pub")
out["pub_connack"] = connect(pub)
acks = {}
acked = threading.Condition()
def on_publish(client, userdata, mid, reason, properties):
    with acked:
        acks[mid] = reason.value
        acked.notify_all()
pub.on_publish = on_publish
pp = Properties(PacketTypes.PUBLISH)
pp.PayloadFormatIndicator = 1
pp.ContentType = "application/json"
pp.ResponseTopic = "p5/reply"
pp.CorrelationData = b"\x01\x02"
pp.UserProperty = [("z", "1"), ("a", "2")]
pp.MessageExpiryInterval = 600
pp.TopicAlias = 1
first = pub.publish("p5/data", '{"n":1}', qos=1, properties=pp)
nobody = pub.publish("nobody/here", "x", qos=1)
first.wait_for_publish(10)
nobody.wait_for_publish(10)
with acked:
    assert acked.wait_for(lambda: len(acks) == 2, 10), acks
out["puback_reasons"] = [acks[first.mid], acks[nobody.mid]]
wait(lambda: len(msgs) == 1)

# The subscriber leaves (DISCONNECT, session kept); a message for it is queued.
sub.disconnect()
sub.loop_stop()
pub.publish("p5/later", "queued", qos=1).wait_for_publish(10)
sub2 = client("paho5-sub")
sub2.on_message = on_message
out["sub_reconnect"] = connect(sub2, cp, clean_start=False)
wait(lambda: len(msgs) == 2)
out["messages"] = msgs

# A will with a Will Delay Interval of 1 s, on a connection that is lost (no DISCONNECT).
dying = client("paho5-dying")
dp = Properties(PacketTypes.CONNECT)
dp.SessionExpiryInterval = 30
wp = Properties(PacketTypes.WILLMESSAGE)
wp.WillDelayInterval = 1
dying.will_set("p5/will", "gone", qos=1, properties=wp)
connect(dying, dp)
dying.loop_stop()
lost = time.monotonic()
dying.socket().close()
wait(lambda: len(msgs) == 3)
out["will"] = {"topic": msgs[2]["topic"], "payload": msgs[2]["payload"],
               "after_delay": time.monotonic() - lost >= 0.9}
for c in (sub2, pub):
    c.disconnect()
    c.loop_stop()
for key, value in out.items():
    print(key, json.dumps(value, sort_keys=True))
