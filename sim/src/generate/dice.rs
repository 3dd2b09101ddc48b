//! Dice: many small independent draws packed into one random `u64`, and the picks read from
//! them.
//!
//! Each proptest draw costs about 14 ns and a node in the value tree. One die per arrival
//! instead of one draw per decision keeps a standard scenario near 250 draws, which is what
//! brings generation to about 10 us.
//!
//! Parts are read from the most significant bits down. Shrinking a die moves the number
//! towards 0, which zeroes its first parts first; the parts are laid out so that 0 means the
//! plain case (see [`Pick::chance`]), so a shrunk scenario drifts towards the ordinary.

/// One random `u64`, read a few bits at a time.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dice {
    value: u64,
    /// Bits not read yet, counted from the least significant end.
    left: u32,
}

/// Bits of a [`Pick`]'s percentage.
const PCT_BITS: u32 = 7;
/// Bits of a [`Pick`]'s position in a range.
const PERMILLE_BITS: u32 = 10;
/// Bits of an index into a list (used modulo the list's length).
const INDEX_BITS: u32 = 10;

impl Dice {
    pub(super) fn new(value: u64) -> Self {
        Self { value, left: u64::BITS }
    }

    /// The next `bits` bits as a number.
    pub(super) fn take(&mut self, bits: u32) -> u64 {
        assert!(bits <= self.left, "a die has {} bits left, {bits} wanted", self.left);
        self.left -= bits;
        (self.value >> self.left) & ((1u64 << bits) - 1)
    }

    /// An index into a list of up to 1024 items, to be taken modulo the list's length.
    pub(super) fn index(&mut self) -> usize {
        self.take(INDEX_BITS) as usize
    }

    /// A percentage from 0 to 99.
    pub(super) fn pct(&mut self) -> u32 {
        ((self.take(PCT_BITS) * 100) >> PCT_BITS) as u32
    }

    /// True for `pct` percent of all dice, never for the plain 0 (see [`Pick::chance`]).
    pub(super) fn flag(&mut self, pct: u32) -> bool {
        Pick { sel: self.pct(), permille: 0 }.chance(pct)
    }

    /// A percentage and a position in a range.
    pub(super) fn pick(&mut self) -> Pick {
        let sel = self.pct();
        let permille = self.take(PERMILLE_BITS) * 1000 / ((1 << PERMILLE_BITS) - 1);
        Pick { sel, permille }
    }

    /// Three picks, the most one die holds.
    pub(super) fn picks(mut self) -> [Pick; 3] {
        [self.pick(), self.pick(), self.pick()]
    }
}

/// Every pick of a row of dice, three per die.
pub(super) fn picks<const N: usize>(dice: &[Dice]) -> [Pick; N] {
    let mut all = dice.iter().flat_map(|d| d.picks());
    std::array::from_fn(|_| all.next().expect("enough dice for the picks"))
}

/// A percentage to compare with a threshold, and a position within a range in thousandths.
///
/// One pick decides both whether something happens and how big it is.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Pick {
    /// 0 to 99; 0 is the plain case.
    pub(super) sel: u32,
    /// 0 to 1000.
    pub(super) permille: u64,
}

impl Pick {
    /// True for `pct` percent of all picks, never for the plain pick 0.
    pub(super) fn chance(self, pct: u32) -> bool {
        self.sel + pct >= 100
    }

    /// A value from `lo` to `hi`, both included.
    pub(super) fn scale(self, lo: u64, hi: u64) -> u64 {
        lo + (hi - lo) * self.permille / 1000
    }

    /// A signed value from `lo` to `hi`, both included.
    pub(super) fn scale_signed(self, lo: i64, hi: i64) -> i64 {
        lo + (hi - lo) * self.permille as i64 / 1000
    }
}
