"""MAX7219 8-digit 7-segment LED driver chain over SPI: one chip per display line.

Owns the register protocol (Maxim MAX7219/MAX7221 datasheet, Table 2 register map): Code B
decoding on all digits (Table 5: 0-9, '-', 0xF blank), scan limit 7, intensity, shutdown
off, display test off; a write is one 16-bit word per chip, MSB first, the first word for the
chip farthest from the MCU, latched by the rising edge of LOAD/CS. ``show(line, value)``
right-aligns an unsigned integer (up to 8 digits) on one chip with blank leading digits.
It does not decide what to show (``nodes/display.py``).
"""

import machine

REG_DIGIT0 = 0x01
REG_DECODE_MODE = 0x09
REG_INTENSITY = 0x0A
REG_SCAN_LIMIT = 0x0B
REG_SHUTDOWN = 0x0C
REG_DISPLAY_TEST = 0x0F
BLANK = 0x0F
DASH = 0x0A
DIGITS = 8


class Max7219:
    def __init__(self, spi, cs_pin, chips=2, intensity=8):
        self._spi = spi
        self._cs = machine.Pin(cs_pin, machine.Pin.OUT, value=1)
        self.chips = chips
        for reg, value in (
            (REG_DISPLAY_TEST, 0),
            (REG_SCAN_LIMIT, DIGITS - 1),
            (REG_DECODE_MODE, 0xFF),
            (REG_INTENSITY, intensity & 0x0F),
        ):
            self._all(reg, value)
        for line in range(chips):
            self.clear(line)
        self._all(REG_SHUTDOWN, 1)

    def _write(self, words):
        """words[k] = (register, value) for chip k (0 = nearest the MCU)."""
        buf = bytearray(2 * self.chips)
        for k in range(self.chips):
            reg, value = words[k]
            at = 2 * (self.chips - 1 - k)  # the first word shifted out ends in the farthest chip
            buf[at] = reg
            buf[at + 1] = value
        self._cs.value(0)
        self._spi.write(buf)
        self._cs.value(1)

    def _all(self, reg, value):
        self._write([(reg, value)] * self.chips)

    def _one(self, line, reg, value):
        # No-op (register 0x00) for the other chips of the chain.
        self._write([(reg, value) if k == line else (0, 0) for k in range(self.chips)])

    def clear(self, line):
        for digit in range(DIGITS):
            self._one(line, REG_DIGIT0 + digit, BLANK)

    def show(self, line, value):
        """Show ``value`` (0..99999999) on ``line``; dashes when it does not fit."""
        if not 0 <= line < self.chips:
            raise ValueError("no such line")
        if value < 0 or value > 99999999:
            codes = [DASH] * DIGITS
        else:
            codes = []
            for _ in range(DIGITS):
                codes.append(value % 10)
                value //= 10
                if value == 0:
                    break
            codes += [BLANK] * (DIGITS - len(codes))
        for digit in range(DIGITS):  # digit 0 is the rightmost
            self._one(line, REG_DIGIT0 + digit, codes[digit])
