//! A JPEG's frame header and colour markers, read by walking its markers up to the first scan,
//! without decoding anything: enough to tell whether a GPU decoder gives the image libjpeg's
//! colours (`--decode gpu` sends such JPEGs to nvJPEG and decodes the rest on the CPU).

/// What a JPEG declares before its first scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JpegFrame {
    /// The start-of-frame marker's second byte: 0xc0 baseline, 0xc1 extended, 0xc2
    /// progressive, 0xc9.. arithmetic coding.
    pub sof: u8,
    /// Bits per sample.
    pub precision: u8,
    pub width: usize,
    pub height: usize,
    /// Per component: its id and its horizontal and vertical sampling factors.
    pub components: Vec<(u8, u8, u8)>,
    /// A JFIF APP0 marker was seen.
    pub jfif: bool,
    /// An Adobe APP14 marker's transform flag (0: no colour transform, 1: YCbCr, 2: YCCK).
    pub adobe_transform: Option<u8>,
}

impl JpegFrame {
    /// Whether the three components are YCbCr, as libjpeg decides it (`jdapimin.c`): a JFIF
    /// marker says so; else an Adobe marker's transform flag 0 says RGB; else component ids
    /// 'R', 'G', 'B' say RGB; anything else is YCbCr.
    pub fn is_ycbcr(&self) -> bool {
        if self.components.len() != 3 {
            return false;
        }
        if self.jfif {
            return true;
        }
        match self.adobe_transform {
            Some(transform) => transform != 0,
            None => self.components.iter().map(|c| c.0).collect::<Vec<_>>() != [b'R', b'G', b'B'],
        }
    }

    /// A baseline (8-bit, Huffman, sequential) YCbCr JPEG with chroma sampled at one of
    /// 4:4:4, 4:2:2, 4:2:0 or 4:4:0: what nvJPEG's hardware decoder and its batched decoding
    /// take, and where its colours are libjpeg's up to rounding.
    pub fn is_baseline_ycbcr(&self) -> bool {
        let standard_luma = matches!(self.components.first(), Some((_, 1 | 2, 1 | 2)));
        let chroma_whole = self.components.iter().skip(1).all(|c| (c.1, c.2) == (1, 1));
        self.sof == 0xc0
            && self.precision == 8
            && self.width > 0
            && self.height > 0
            && self.is_ycbcr()
            && standard_luma
            && chroma_whole
    }

    /// A baseline greyscale JPEG (one 8-bit component, Huffman, sequential, unscaled), which
    /// nvJPEG decodes to RGB with the grey level in all three channels: what libjpeg's grey
    /// decoding and Pillow's conversion to RGB give, up to the inverse DCT's rounding.
    pub fn is_baseline_grey(&self) -> bool {
        self.sof == 0xc0
            && self.precision == 8
            && self.width > 0
            && self.height > 0
            && matches!(self.components[..], [(_, 1, 1)])
    }
}

/// The frame of a JPEG, or `None` when `bytes` is not a JPEG or its markers end, or are cut
/// short, before a frame header and the first scan.
pub fn read_frame(bytes: &[u8]) -> Option<JpegFrame> {
    if !bytes.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut frame: Option<JpegFrame> = None;
    let (mut jfif, mut adobe_transform) = (false, None);
    let mut at = 2;
    loop {
        // A marker: 0xff, any fill bytes 0xff, then its code.
        if *bytes.get(at)? != 0xff {
            return None;
        }
        while *bytes.get(at)? == 0xff {
            at += 1;
        }
        let marker = bytes[at];
        at += 1;
        match marker {
            // Start of scan: the header is over.
            0xda => break,
            0xd9 => return None,
            // Markers without a segment.
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        // The length counts its own two bytes.
        let length = u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize;
        if length < 2 {
            return None;
        }
        let segment = bytes.get(at + 2..at + length)?;
        at += length;
        match marker {
            0xe0 if segment.starts_with(b"JFIF\0") => jfif = true,
            0xee if segment.starts_with(b"Adobe") && segment.len() >= 12 => adobe_transform = Some(segment[11]),
            // Start of frame: every 0xcN but DHT (c4), JPG (c8) and DAC (cc).
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                let count = *segment.get(5)? as usize;
                let components = (0..count)
                    .map(|i| {
                        let c = segment.get(6 + 3 * i..9 + 3 * i)?;
                        Some((c[0], c[1] >> 4, c[1] & 0x0f))
                    })
                    .collect::<Option<Vec<_>>>()?;
                frame = Some(JpegFrame {
                    sof: marker,
                    precision: segment[0],
                    height: u16::from_be_bytes([segment[1], segment[2]]) as usize,
                    width: u16::from_be_bytes([segment[3], segment[4]]) as usize,
                    components,
                    jfif: false,
                    adobe_transform: None,
                });
            }
            _ => {}
        }
    }
    frame.map(|f| JpegFrame { jfif, adobe_transform, ..f })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![0xff, marker];
        s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    fn sof(marker: u8, width: u16, height: u16, components: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut body = vec![8];
        body.extend_from_slice(&height.to_be_bytes());
        body.extend_from_slice(&width.to_be_bytes());
        body.push(components.len() as u8);
        for &(id, h, v) in components {
            body.extend_from_slice(&[id, (h << 4) | v, 0]);
        }
        segment(marker, &body)
    }

    fn jpeg(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = vec![0xff, 0xd8];
        for p in parts {
            bytes.extend_from_slice(p);
        }
        bytes.extend_from_slice(&segment(0xda, &[0; 10]));
        bytes
    }

    const YCC_420: [(u8, u8, u8); 3] = [(1, 2, 2), (2, 1, 1), (3, 1, 1)];

    #[test]
    fn the_frame_and_colour_markers_are_read() {
        let jfif = segment(0xe0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        let f = read_frame(&jpeg(&[jfif.clone(), segment(0xc4, &[0; 20]), sof(0xc0, 500, 375, &YCC_420)])).unwrap();
        assert_eq!((f.sof, f.width, f.height, f.jfif, f.adobe_transform), (0xc0, 500, 375, true, None));
        assert!(f.is_baseline_ycbcr());
        // Fill bytes before a marker are skipped.
        let mut filled = sof(0xc0, 8, 8, &YCC_420);
        filled.insert(0, 0xff);
        assert_eq!(read_frame(&jpeg(&[filled])).unwrap().width, 8);
    }

    #[test]
    fn what_a_gpu_decoder_would_decode_differently_is_told_apart() {
        let decodable = |parts: &[Vec<u8>]| read_frame(&jpeg(parts)).unwrap().is_baseline_ycbcr();
        assert!(!decodable(&[sof(0xc2, 8, 8, &YCC_420)]), "progressive");
        assert!(!decodable(&[sof(0xc0, 8, 8, &[(1, 1, 1)])]), "greyscale");
        let grey = |parts: &[Vec<u8>]| read_frame(&jpeg(parts)).unwrap().is_baseline_grey();
        assert!(grey(&[sof(0xc0, 8, 8, &[(1, 1, 1)])]));
        assert!(!grey(&[sof(0xc2, 8, 8, &[(1, 1, 1)])]), "progressive greyscale");
        assert!(!grey(&[sof(0xc0, 8, 8, &[(1, 2, 2)])]), "greyscale with sampling factors");
        assert!(!grey(&[sof(0xc0, 8, 8, &YCC_420)]), "colour");
        assert!(!decodable(&[sof(0xc0, 8, 8, &[(1, 4, 1), (2, 1, 1), (3, 1, 1)])]), "4:1:1");
        assert!(!decodable(&[sof(0xc0, 8, 8, &[(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 1)])]), "CMYK");
        assert!(!decodable(&[sof(0xc0, 8, 8, &[(b'R', 1, 1), (b'G', 1, 1), (b'B', 1, 1)])]), "RGB ids");
        let adobe = |transform: u8| segment(0xee, &[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, transform]);
        assert!(!decodable(&[adobe(0), sof(0xc0, 8, 8, &YCC_420)]), "Adobe, no transform: RGB");
        assert!(decodable(&[adobe(1), sof(0xc0, 8, 8, &YCC_420)]), "Adobe, YCbCr");
        assert!(decodable(&[sof(0xc0, 8, 8, &[(1, 1, 2), (2, 1, 1), (3, 1, 1)])]), "4:4:0");
    }

    #[test]
    fn libjpeg_turbos_own_jpegs_are_baseline_ycbcr_or_greyscale() {
        let pixels = vec![128u8; 37 * 21 * 3];
        for (subsamp, decodable) in [
            (turbojpeg::Subsamp::None, true),
            (turbojpeg::Subsamp::Sub2x1, true),
            (turbojpeg::Subsamp::Sub2x2, true),
            (turbojpeg::Subsamp::Sub1x2, true),
            (turbojpeg::Subsamp::Gray, false),
        ] {
            let image = turbojpeg::Image {
                pixels: &pixels[..],
                width: 37,
                pitch: 37 * 3,
                height: 21,
                format: turbojpeg::PixelFormat::RGB,
            };
            let jpeg = turbojpeg::compress(image, 90, subsamp).unwrap();
            let frame = read_frame(&jpeg).unwrap();
            assert_eq!((frame.width, frame.height, frame.sof), (37, 21, 0xc0), "{subsamp:?}");
            assert_eq!(frame.is_baseline_ycbcr(), decodable, "{subsamp:?}: {frame:?}");
            assert_eq!(frame.is_baseline_grey(), subsamp == turbojpeg::Subsamp::Gray, "{subsamp:?}: {frame:?}");
        }
    }

    #[test]
    fn what_is_not_a_whole_header_is_none() {
        let whole = jpeg(&[sof(0xc0, 8, 8, &YCC_420)]);
        for cut in 0..whole.len() - 12 {
            assert_eq!(read_frame(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(read_frame(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(read_frame(&jpeg(&[])), None, "no frame before the scan");
        let mut lying = jpeg(&[sof(0xc0, 8, 8, &YCC_420)]);
        lying[4] = 0x00;
        lying[5] = 0x01; // a segment length below its own two bytes
        assert_eq!(read_frame(&lying), None);
    }
}
