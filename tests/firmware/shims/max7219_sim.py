"""Test model of a chain of MAX7219 LED drivers on the shimmed SPI bus (MicroPython).

Behaves as the datasheet (Maxim MAX7219/MAX7221, "Serial-Addressing Modes", Table 1 and
Table 5): 16-bit words shift in MSB first through each chip's register into the next chip; on
the rising edge of LOAD (CS) every chip latches the last word it holds, so the first word of a
2n-byte write ends in the chip farthest from the MCU. Registers 0x1-0x8 are digits 0-7
(digit 0 shown rightmost here), 0x9 decode mode, 0xA intensity, 0xB scan limit, 0xC shutdown,
0xF display test. ``text(chip)`` renders what chip ``chip`` (0 = nearest the MCU) shows.
"""

import sim

CODE_B = "0123456789-EHLP "  # Table 5: Code B font, 0x0-0xF (0xF blank)


class Max7219Chain:
    def __init__(self, cs_pin_id, count):
        self.count = count
        self.registers = [[0] * 16 for _ in range(count)]
        self.latches = 0
        sim.on_rising[cs_pin_id] = self._latch

    def _latch(self):
        data = bytes(sim.spi_bytes)
        del sim.spi_bytes[:]
        words = [(data[i] << 8) | data[i + 1] for i in range(0, len(data) - 1, 2)]
        # The last `count` words sit in the chain; the last one written is in chip 0.
        words = words[-self.count :]
        for k, word in enumerate(reversed(words)):
            self.registers[k][(word >> 8) & 0x0F] = word & 0xFF
        self.latches += 1

    def text(self, chip):
        regs = self.registers[chip]
        if regs[0x0C] & 1 == 0:
            return None  # shutdown: dark
        shown = ""
        for digit in range(regs[0x0B] & 7, -1, -1):  # leftmost scanned digit first
            raw = regs[1 + digit]
            if regs[0x09] & (1 << digit):
                shown += CODE_B[raw & 0x0F]
            else:
                shown += "?"
        return shown
