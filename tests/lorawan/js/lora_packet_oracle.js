// Oracle for tests/lorawan/test_differential.py: runs npm "lora-packet" (an implementation we did not
// write) over a batch of cases read as one JSON array on stdin, and prints one JSON array of results.
// One process for the whole batch; every byte string is hex. Identifiers are given and returned MSB
// first (lora-packet's own convention for DevAddr, EUIs, nonces and NetID).
"use strict";

const lora = require("lora-packet");

const hex = (b) => Buffer.from(b).toString("hex");
const buf = (h) => Buffer.from(h, "hex");

// FCntMSBytes: the high 16 bits of the 32-bit counter, in on-air (little-endian) order.
function msb(fcnt32) {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(Math.floor(fcnt32 / 0x10000), 0);
  return b;
}

function dataParse(c) {
  const p = lora.fromWire(buf(c.phy));
  const nwk = buf(c.nwk);
  const app = buf(c.app);
  const port = p.getFPort();
  let plaintext = "";
  if (p.FRMPayload && p.FRMPayload.length) {
    plaintext = hex(lora.decrypt(p, app, nwk, msb(c.fcnt32)));
  }
  return {
    mtype: p.getMType(),
    dir: p.getDir(),
    dev_addr: hex(p.DevAddr),
    fcnt16: p.getFCnt(),
    adr: p.getFCtrlADR(),
    adr_ack_req: p.getFCtrlADRACKReq(),
    ack: p.getFCtrlACK(),
    fpending: p.getFCtrlFPending(),
    fopts: hex(p.FOpts),
    fport: port,
    frm_payload: hex(p.FRMPayload || Buffer.alloc(0)),
    mic: hex(p.MIC),
    mic_ok: lora.verifyMIC(p, nwk, undefined, msb(c.fcnt32)),
    plaintext,
  };
}

function dataBuild(c) {
  const fields = {
    MType: c.mtype,
    DevAddr: buf(c.dev_addr),
    FCnt: c.fcnt32 % 0x10000,
    FCtrl: { ADR: c.adr, ACK: c.ack, ADRACKReq: c.adr_ack_req, FPending: c.fpending },
    FOpts: buf(c.fopts),
    FPort: c.fport,
    payload: buf(c.payload),
  };
  const p = lora.fromFields(fields, buf(c.app), buf(c.nwk), undefined, msb(c.fcnt32));
  return { phy: hex(p.getPHYPayload()) };
}

function joinRequest(c) {
  const p = lora.fromWire(buf(c.phy));
  return {
    mtype: p.getMType(),
    join_eui: hex(p.AppEUI),
    dev_eui: hex(p.DevEUI),
    dev_nonce: hex(p.DevNonce),
    mic: hex(p.MIC),
    mic_ok: lora.verifyMIC(p, undefined, buf(c.app_key)),
  };
}

function joinAcceptOpen(c) {
  const key = buf(c.app_key);
  const clear = lora.decryptJoinAccept(lora.fromWire(buf(c.phy)), key);
  const p = lora.fromWire(clear);
  const keys = lora.generateSessionKeys(key, p.NetID, p.AppNonce, buf(c.dev_nonce));
  return {
    mtype: p.getMType(),
    join_nonce: hex(p.AppNonce),
    net_id: hex(p.NetID),
    dev_addr: hex(p.DevAddr),
    rx1_dr_offset: p.getDLSettingsRxOneDRoffset(),
    rx2_dr: p.getDLSettingsRxTwoDataRate(),
    rx_delay: p.RxDelay[0] & 0x0f,
    cflist: hex(p.CFList),
    mic: hex(p.MIC),
    mic_ok: lora.verifyMIC(p, undefined, key),
    nwk_s_key: hex(keys.NwkSKey),
    app_s_key: hex(keys.AppSKey),
  };
}

function joinAcceptBuild(c) {
  const fields = {
    MType: "Join Accept",
    AppNonce: buf(c.join_nonce),
    NetID: buf(c.net_id),
    DevAddr: buf(c.dev_addr),
    DLSettings: Buffer.from([(c.rx1_dr_offset << 4) | c.rx2_dr]),
    RxDelay: Buffer.from([c.rx_delay]),
    CFList: buf(c.cflist),
  };
  const p = lora.fromFields(fields, null, null, buf(c.app_key));
  return { phy: hex(p.getPHYPayload()) };
}

const HANDLERS = {
  data_parse: dataParse,
  data_build: dataBuild,
  join_request: joinRequest,
  join_accept_open: joinAcceptOpen,
  join_accept_build: joinAcceptBuild,
};

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const results = JSON.parse(input).map((c) => {
    try {
      return HANDLERS[c.kind](c);
    } catch (err) {
      return { error: String(err && err.message ? err.message : err) };
    }
  });
  process.stdout.write(JSON.stringify(results));
});
