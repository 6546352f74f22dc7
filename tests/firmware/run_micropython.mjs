// Runs edgegw firmware on real MicroPython (the WebAssembly port, npm
// @micropython/micropython-webassembly-pyscript) inside Node, for tests/firmware/.
//
//   node run_micropython.mjs <firmware_dir> <shims_dir> <script.py> [json_arg]
//
// Copies every .py of <firmware_dir> to /lib and of <shims_dir> to /shims in
// MicroPython's in-memory file system (shims first on sys.path, so `machine`
// etc. resolve to them), exposes a `host` module (send(line): one line to our
// stdout; recv(): one line read synchronously from our stdin) and the string
// json_arg as host.arg(), then runs <script.py>. Exit code 1 on a Python error.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const pkg = require.resolve("@micropython/micropython-webassembly-pyscript/micropython.mjs");
const { loadMicroPython } = await import(pkg);

const [firmwareDir, shimsDir, script, arg = "{}"] = process.argv.slice(2);
const out = (line) => fs.writeSync(1, line + "\n");
const mp = await loadMicroPython({ stdout: out, stderr: (l) => fs.writeSync(2, l + "\n"), linebuffer: true, heapsize: 4 * 1024 * 1024 });

function copyTree(src, dest) {
  try { mp.FS.mkdir(dest); } catch (e) { /* exists */ }
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    const from = path.join(src, entry.name);
    const to = dest + "/" + entry.name;
    if (entry.isDirectory() && entry.name !== "__pycache__") copyTree(from, to);
    else if (entry.isFile() && entry.name.endsWith(".py")) mp.FS.writeFile(to, fs.readFileSync(from));
  }
}
copyTree(firmwareDir, "/lib");
copyTree(shimsDir, "/shims");

let pending = Buffer.alloc(0);
function recvLine() {
  const chunk = Buffer.alloc(4096);
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const line = pending.subarray(0, nl).toString("utf8");
      pending = pending.subarray(nl + 1);
      return line;
    }
    let n;
    try {
      n = fs.readSync(0, chunk, 0, chunk.length, null);
    } catch (e) {
      if (e.code === "EAGAIN") { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5); continue; }
      throw e;
    }
    if (n === 0) throw new Error("host closed stdin");
    pending = Buffer.concat([pending, chunk.subarray(0, n)]);
  }
}
mp.registerJsModule("host", { send: (line) => out("@@" + line), recv: recvLine, arg: () => arg });

try {
  mp.runPython("import sys\nsys.path.insert(0, '/lib')\nsys.path.insert(0, '/shims')");
  mp.runPython(fs.readFileSync(script, "utf8"));
} catch (e) {
  fs.writeSync(2, String(e.message || e) + "\n");
  process.exit(1);
}
